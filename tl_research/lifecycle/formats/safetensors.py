"""safetensors: `model.safetensors` (backbone and head tensors, `backbone.` / `head.` prefixes) and `config.yaml`;
`load_run` reads the folder back."""

from __future__ import annotations

from pathlib import Path

import yaml
from safetensors.torch import save_file

from tl_research.lifecycle.export import export_format, metadata, plain
from tl_research.lifecycle.inference import LoadedRun
from tl_research.run_folder import CONFIG


@export_format("safetensors", f"backbone and head tensors + {CONFIG} (load_run reads the folder back)")
def write(loaded: LoadedRun, out: Path) -> list[Path]:
    model = loaded.model
    state = {f"backbone.{k}": v for k, v in model.backbone.model.state_dict().items()}
    state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    save_file(plain(state), out / "model.safetensors", metadata=metadata(loaded))
    # the run's config under the run folder's name for it: load_run reads either folder the same way
    (out / CONFIG).write_text(yaml.safe_dump(loaded.experiment.to_dict(), sort_keys=False))
    return [out / "model.safetensors", out / CONFIG]
