"""A job's files must hold the data its method trains on: chat rows for supervised fine-tuning, preference
pairs for DPO. Checked at creation, so a mismatch is a 400 naming the file, not a failed run."""

from alignd.contract import TrainingMethod
from alignd.contract.chat import CHAT_FORMAT
from alignd.errors import InvalidRequest
from alignd.models import FileModel


def check_file_kind(row: FileModel, method: TrainingMethod, param: str) -> None:
    is_chat = row.format == CHAT_FORMAT
    if method is TrainingMethod.supervised and not is_chat:
        raise InvalidRequest(
            f"{param} {row.id} ({row.filename}) holds preference data ({row.format} format, line 1 on); "
            "method 'supervised' trains on chat rows {\"messages\": [...]}: upload a chat file, or use "
            "method 'dpo' for this one",
            param=param,
            code="invalid_file_format",
        )
    if method is TrainingMethod.dpo and is_chat:
        raise InvalidRequest(
            f"{param} {row.id} ({row.filename}) holds chat rows for supervised fine-tuning (line 1 on); "
            "method 'dpo' trains on preference pairs: use method 'supervised' for this file, or upload "
            "preference data",
            param=param,
            code="invalid_file_format",
        )
