"""Preference datasets: streaming JSONL lines, validation with the trainer's row rules, and the
quality report. Pure logic: no HTTP, database or storage."""

from alignd.datasets.lines import FileTooLarge, LineBatch, LineSplitter, LineTooLong, split_lines
from alignd.datasets.report import (
    AgreementStats,
    LengthBias,
    Lengths,
    LengthStats,
    LineSample,
    QualityReport,
    QualityReportBuilder,
    TruncationReport,
    WeightStats,
    truncation_share,
)
from alignd.datasets.validate import DatasetSummary, DatasetValidator, validate_stream

__all__ = [
    "AgreementStats",
    "DatasetSummary",
    "DatasetValidator",
    "FileTooLarge",
    "LengthBias",
    "LengthStats",
    "Lengths",
    "LineBatch",
    "LineSample",
    "LineSplitter",
    "LineTooLong",
    "QualityReport",
    "QualityReportBuilder",
    "TruncationReport",
    "WeightStats",
    "split_lines",
    "truncation_share",
    "validate_stream",
]
