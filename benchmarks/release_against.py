"""Is a release built here the release recorded elsewhere? Compares the stage hashes of a built
release (its `simulation.json`) with recorded ones (a `repeatability*.json` of another machine),
stage by stage; `--recoded` also compares each audience's answers re-encoded as the simulator
wrote them before it took the study page's button rule from `interpscore.protocol` (an upper-row
answer of confidence c was button 3 - c, and `switched_queries` was inverted), so a release
recorded before that change can still be compared answer for answer.

    python benchmarks/release_against.py data/simulated-<key>/release \
        benchmarks/results/repeatability_full.json --recoded --out benchmarks/results/release_avx512.json
"""

import argparse
import csv
import hashlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit  # noqa: E402
from repeatability import cpu  # noqa: E402

BUTTON_BEFORE = {"0": "2", "1": "1", "2": "0", "3": "3", "4": "4", "5": "5"}
FLIPPED = {"True": "False", "False": "True"}


def recoded_digest(responses: Path) -> str:
    """The stage hash (`simulate.release.digest` of the table: sha256 of its CSV) of the answers
    in the encoding before the protocol's."""
    rows = list(csv.reader(responses.open(newline="")))
    button, switched = rows[0].index("button_pressed"), rows[0].index("switched_queries")
    for row in rows[1:]:
        row[button], row[switched] = BUTTON_BEFORE[row[button]], FLIPPED[row[switched]]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return hashlib.sha256(text.getvalue().encode()).hexdigest()[:16]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", type=Path)
    parser.add_argument("recorded", type=Path, help="a repeatability JSON (its pinned 'as is' "
                        "build) or a simulation.json")
    parser.add_argument("--recoded", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    built = json.loads((args.release / "simulation.json").read_text())["hashes"]
    recorded = json.loads(args.recorded.read_text())
    recorded = (recorded["runs"]["pinned"]["hashes"]["as is"] if "runs" in recorded
                else recorded["hashes"])
    stages = {stage: built.get(stage) == value for stage, value in recorded.items()}
    result = {"benchmark": "release_against", "cpu": cpu(), "release": str(args.release),
              "recorded": str(args.recorded), "same_stages": stages, "hashes": built}
    if args.recoded:
        result["same_answers_recoded"] = {
            stage: recoded_digest(args.release / "audiences" / stage.removeprefix("answers ")
                                  / "responses_main.csv") == value
            for stage, value in recorded.items() if stage.startswith("answers ")}
    emit(result, args.out)


if __name__ == "__main__":
    main()
