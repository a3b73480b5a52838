"""The weights a job starts from when it continues an `ft:` model or a checkpoint (`spec.init`).

A managed run downloads each layer (a LoRA adapter or full weights of an earlier job) through
`GET /internal/v1/jobs/{id}/init_files?layer=i` into the model cache, like a base model kept in object
storage; an offline spec names local directories. `model.load_start_model` then builds the starting model
from the base and these layers.
"""

from pathlib import Path

from alignd.contract import InitLayer, InitWeights, JobSpec, ModelFilesResponse
from alignd_trainer.errors import BadInputError
from alignd_trainer.managed import ManagedJob
from alignd_trainer.remote import _internal_get, download_model, private_cache_root
from alignd_trainer.retry import RetryPolicy


def localize_init(
    spec: JobSpec, job: ManagedJob | None, cache_root: Path, *, policy: RetryPolicy | None = None
) -> JobSpec:
    """The spec with every init layer on local disk."""
    if spec.init is None:
        return spec
    layers = []
    for index, layer in enumerate(spec.init.layers):
        if Path(layer.location).is_dir():
            layers.append(layer)
            continue
        if job is None:
            raise BadInputError(
                f"init layer {index} ({layer.location}) is not a local directory; an offline spec names the "
                "adapter or model directories to start from"
            )
        raw = _internal_get(job, f"init_files?layer={index}", f"starting weights ({layer.location})", policy)
        listing = ModelFilesResponse.model_validate_json(raw)
        local = download_model(listing, cache_root, policy=policy, fallback_root=private_cache_root())
        layers.append(InitLayer(kind=layer.kind, location=str(local)))
    init = InitWeights(source=spec.init.source, layers=layers)
    return spec.model_copy(update={"init": init})
