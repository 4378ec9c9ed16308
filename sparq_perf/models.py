"""Model architectures: validated frozen dataclasses from model_configs/models.yaml or a user file."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .config import check_keys, positive, read_yaml
from .errors import UserError, closest

_INT_FIELDS = ("n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_ff", "vocab")
_BOOL_FIELDS = ("gated", "tied_embeddings")


@dataclass(frozen=True)
class Model:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_ff: int
    vocab: int
    gated: bool = True
    tied_embeddings: bool = False
    source: str = ""

    @property
    def group_size(self) -> int:
        """Query heads per KV head (g)."""
        return self.n_heads // self.n_kv_heads

    @property
    def qkv_params(self) -> int:
        return self.d_model * (self.n_heads + 2 * self.n_kv_heads) * self.d_head

    @property
    def out_params(self) -> int:
        return self.n_heads * self.d_head * self.d_model

    @property
    def mlp_params(self) -> int:
        return (3 if self.gated else 2) * self.d_model * self.d_ff

    @property
    def layer_params(self) -> int:
        return self.qkv_params + self.out_params + self.mlp_params + 2 * self.d_model

    @property
    def n_params(self) -> int:
        embed = self.vocab * self.d_model
        head = 0 if self.tied_embeddings else self.vocab * self.d_model
        return self.n_layers * self.layer_params + embed + head + self.d_model


def parse_model(name: str, data: dict, where: str) -> Model:
    if not isinstance(data, dict):
        raise UserError(f"{where}: model {name} must be a mapping")
    check_keys(f"{where}: {name}", data, set(_INT_FIELDS), set(_BOOL_FIELDS) | {"source"})
    values = {f: positive(f"{where}: {name}", f, data[f], integer=True) for f in _INT_FIELDS}
    for f in _BOOL_FIELDS:
        if f in data and not isinstance(data[f], bool):
            raise UserError(f"{where}: {name}: field {f} must be true or false, got {data[f]!r}")
    if values["n_heads"] % values["n_kv_heads"]:
        raise UserError(f"{where}: {name}: n_heads ({values['n_heads']}) must be a multiple of n_kv_heads ({values['n_kv_heads']})")
    return Model(name=name, **values, gated=data.get("gated", True),
                 tied_embeddings=data.get("tied_embeddings", False), source=str(data.get("source", "")))


def parse_models(data: dict, where: str) -> dict[str, Model]:
    return {str(n): parse_model(str(n), d, where) for n, d in data.items()}


@lru_cache(maxsize=None)
def builtin_models() -> dict[str, Model]:
    entry = resources.files("sparq_perf.model_configs").joinpath("models.yaml")
    return parse_models(read_yaml("model_configs/models.yaml", entry.read_text()), "model_configs/models.yaml")


def get_model(name_or_path: str) -> Model:
    """A model by name, or the single model in a YAML file (`name: {fields}`)."""
    models = builtin_models()
    if name_or_path in models:
        return models[name_or_path]
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        found = parse_models(read_yaml(name_or_path), name_or_path)
        if len(found) != 1:
            raise UserError(f"{name_or_path}: expected exactly one model, found {len(found)}")
        return next(iter(found.values()))
    raise UserError(f"unknown model {name_or_path!r}{closest(name_or_path, models)}; known: {', '.join(models)}")
