"""The IMI task's rules, in one place (Zimmermann, Klein & Brendel, NeurIPS 2023; their code,
brendel-group/imi): what a trial shows, how a task is made of trials, and what a button means.

Every stage reads them from here: the stimulus selection and the scorer, the simulator, the
exported experiment, the browser study (its study.json carries `Protocol.to_json()` into the
page's plugin) and the exclusions. Where a study or a simulation departs from IMI's numbers it
says so by overriding a field (`dataclasses.replace(IMI, trials_per_task=20)`), never by writing
a number of its own; `EMBEDDED` is the embedded default's departure, made for 2 CPU cores.

Light (no numpy, no torch): the command line and the data stage import it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

BUTTON_ROWS = ("upper", "lower")


@dataclass(frozen=True)
class Protocol:
    # What a trial shows: 9 min and 9 max references (one per extremeness bin of 20 of the 180
    # most extreme images), so 20 batches of references per unit, and two queries.
    n_refs: int = 9
    n_batches: int = 20
    # Query percentiles of the hard conditions (the max query at P, the min query at 100 - P);
    # `easy` queries come right after the references (ranks ~181-200 from each end).
    hard85: float = 85.0
    hard95: float = 95.0
    hard99: float = 99.0
    # Images: the shorter side resized to `resize_ratio` * image_size, a centre crop of
    # `image_size` (IMI: 256 then 224).
    image_size: int = 224
    resize_ratio: float = 256 / 224
    # The images the units are ranked on (IMI: the ImageNet training set).
    pool_size: int = 1_281_167
    # A task (one participant's session): main trials, catch trials among them, practice trials
    # (repeated until all are right), and the practice attempts a valid response may need.
    trials_per_task: int = 40
    catch_per_task: int = 5
    demo_trials: int = 5
    max_demo_attempts: int = 3
    # Six buttons: three confidence levels for each query, one row per query (0-2 the upper row,
    # 3-5 the lower one); the label of a button is its confidence, 1 = unsure .. 3 = sure.
    confidence_levels: int = 3

    @property
    def difficulties(self) -> tuple[str, ...]:
        return ("easy", *self.hard_percentiles)

    @property
    def hard_percentiles(self) -> dict[str, float]:
        return {"hard85": self.hard85, "hard95": self.hard95, "hard99": self.hard99}

    @property
    def n_buttons(self) -> int:
        return 2 * self.confidence_levels

    def resized(self, size: int) -> int:
        """The shorter side before the centre crop, for images of `size` pixels."""
        return round(size * self.resize_ratio)

    # --- the buttons -------------------------------------------------------------------------
    def row(self, button: int) -> str:
        return BUTTON_ROWS[button // self.confidence_levels]

    def confidence(self, button: int) -> int:
        return button % self.confidence_levels + 1

    def button(self, row: str, confidence: int) -> int:
        """The button that answers the query of `row` ('upper'|'lower') with `confidence`."""
        return BUTTON_ROWS.index(row) * self.confidence_levels + confidence - 1

    def query_row(self, choice: str, switched: bool) -> str:
        """The row of query `choice` ('a' the min query, 'b' the max query): the upper query is
        the min query unless the queries were switched."""
        return BUTTON_ROWS[(choice == "a") == bool(switched)]

    def choice(self, button: int, switched: bool) -> str:
        """'b' (the max query) or 'a' (the min query) that `button` chose."""
        return "b" if self.row(button) == self.query_row("b", switched) else "a"

    def to_json(self) -> dict:
        """The fields, and what each button means (the study page reads its buttons from it)."""
        buttons = [{"row": self.row(b), "confidence": self.confidence(b)}
                   for b in range(self.n_buttons)]
        return {**asdict(self), "buttons": buttons}


IMI = Protocol()
# The embedded default: a simulated IMI that builds in minutes on 2 CPU cores. Smaller images
# from an offline pool of thousands, half the reference batches, and shorter tasks (more participants per unit for the same answers).
EMBEDDED = replace(IMI, image_size=128, pool_size=3000, n_batches=10, trials_per_task=20, catch_per_task=4,
                   demo_trials=2)
DIFFICULTIES = IMI.difficulties
