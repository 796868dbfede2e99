"""The simulated release's configuration: what is simulated, and its audiences. Light (no
networks), so the CLI builds `simulate`'s options from it."""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

from ..errors import InputError
from ..options import POSITIVE_INT, SEED, option
from ..protocol import EMBEDDED, Protocol
from .families import FAMILIES, HELDOUT_FAMILIES, TRAINING_FAMILIES

# The modules whose code makes a release: a change to any of them (comments and docstrings
# aside) gives new data, so it changes every release's key and fails the recorded calibration.
SIMULATOR_MODULES = ("simulate/config.py", "simulate/families.py", "simulate/observers.py",
                     "simulate/world.py", "simulate/participants.py", "simulate/release.py",
                     "stimuli/pools.py", "stimuli/networks.py", "stimuli/model_spec.py",
                     "stimuli/units.py",
                     "stimuli/activations.py", "stimuli/selection.py", "stimuli/store.py",
                     "data/layouts.py", "data/dataset.py")
# ... and of the synthetic condition, for the configs that ask for it
SYNTHETIC_MODULES = ("simulate/synthetic.py", "stimuli/visualize.py", "stimuli/fourier.py",
                     "stimuli/objectives.py")
URL_ROOT = "https://simulated.invalid/imi"
DEFAULT_AUDIENCE = "default"
HELDOUT_POOL = "heldout-pool"


@dataclass
class SimulationConfig:
    models: list[str] = option(None, "model specs of the studied networks", factory=lambda: [
        "efficientnet_lite0", "efficientnet_lite1", "resnet18@random", "convnext_atto@random",
        "vit_tiny_patch16_224@random"])
    units_per_model: int = option(96, "units sampled per model", POSITIVE_INT)
    # model label -> hard conditions shown besides `easy`
    hard: dict = field(default_factory=lambda: {"efficientnet_lite0": ["hard85", "hard95",
                                                                       "hard99"]})
    pool_size: int = option(EMBEDDED.pool_size, "images of pool A (every unit's stimuli)",
                            POSITIVE_INT)
    heldout_pool_size: int = EMBEDDED.pool_size // 2  # pool B (disjoint source photos)
    image_size: int = option(EMBEDDED.image_size, "pixels", POSITIVE_INT)
    n_refs: int = EMBEDDED.n_refs
    n_batches: int = option(EMBEDDED.n_batches, "stimulus batches (tasks) per unit", POSITIVE_INT)
    max_refs_per_source: int = 8
    responses_per_unit: int = option(34, "simulated participants per condition (~30 valid "
                                     "after the exclusions)", POSITIVE_INT)
    trials_per_task: int = EMBEDDED.trials_per_task
    catch_per_task: int = EMBEDDED.catch_per_task
    demo_trials: int = EMBEDDED.demo_trials
    careless_fraction: float = 0.10
    multi_participation_fraction: float = 0.02
    target_accuracy: float = 0.83  # mean easy accuracy on trained networks, every family
    val_fraction: float = 0.15
    test_fraction: float = 0.30
    # model label -> how many of its units also get an `optimized` condition (IMI's synthetic
    # references: feature visualisations), and overrides of the visualisation options
    synthetic: dict = field(default_factory=dict)
    visualization: dict = field(default_factory=dict)
    training_families: list = field(default_factory=lambda: [f.name for f in TRAINING_FAMILIES])
    heldout_families: list = field(default_factory=lambda: [f.name for f in HELDOUT_FAMILIES])
    seed: int = option(0, "seed of everything simulated", SEED)

    def key(self) -> str:
        """Names the cached release: changes with the config and with the simulator's code."""
        payload = json.dumps({**asdict(self),
                              "simulator": simulator_fingerprint(bool(self.synthetic))},
                             sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    @property
    def protocol(self) -> Protocol:
        """The IMI protocol as this simulation runs it (`EMBEDDED` unless the config says
        otherwise)."""
        return replace(EMBEDDED, image_size=self.image_size, pool_size=self.pool_size,
                       n_refs=self.n_refs, n_batches=self.n_batches,
                       trials_per_task=self.trials_per_task, catch_per_task=self.catch_per_task,
                       demo_trials=self.demo_trials)

    def check(self) -> None:
        unknown = [f for f in self.training_families + self.heldout_families if f not in FAMILIES]
        if unknown:
            raise InputError(f"simulation: unknown observer families {unknown}; valid: "
                             f"{', '.join(FAMILIES)}")
        if set(self.training_families) & set(self.heldout_families):
            raise InputError("simulation: a family cannot be both a training and a held-out family")
        if not self.training_families:
            raise InputError("simulation: training_families is empty")
        from ..stimuli.networks import check_model_spec

        for spec in self.models:
            check_model_spec(spec, option="--models")


def audiences(config: SimulationConfig) -> dict[str, tuple[str, list[str]]]:
    """Audience name -> (pool, the families its participants mix)."""
    out = {DEFAULT_AUDIENCE: ("A", list(config.training_families))}
    out.update({f"family-{f}": ("A", [f])
                for f in config.training_families + config.heldout_families})
    out[f"{HELDOUT_POOL}-{DEFAULT_AUDIENCE}"] = ("B", list(config.training_families))
    out.update({f"{HELDOUT_POOL}-{f}": ("B", [f]) for f in config.heldout_families})
    return out


def is_pretrained(spec: str) -> bool:
    from ..stimuli.model_spec import parse_model_spec

    return parse_model_spec(spec).pretrained




@lru_cache(maxsize=2)
def simulator_fingerprint(synthetic: bool = False) -> str:
    """A hash of the simulator's code (`SIMULATOR_MODULES`, and `SYNTHETIC_MODULES` for a
    release with synthetic conditions), read as syntax trees without their docstrings, so a
    comment or a reflowed docstring leaves it alone and any change of what the code does moves
    it."""
    from ..resources import package_file

    digest = hashlib.sha256()
    for name in SIMULATOR_MODULES + (SYNTHETIC_MODULES if synthetic else ()):
        tree = ast.parse(package_file(*name.split("/")).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(ast.dump(tree).encode())
    digest.update(package_file("simulate", "card.md").read_bytes())
    return digest.hexdigest()[:16]
