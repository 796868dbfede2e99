"""Build small IMI trial tables in the documented schema, with known answers, for tests."""

from __future__ import annotations

import pandas as pd

HOST = "https://example.org/experiments/screenshots_9_references"
# (model label, layer, channel, batch); the hard variant shares its unit with resnet50's.
UNITS = [
    ("resnet50", "layer1.0.conv1", 3, 0),
    ("resnet50", "layer3.2.conv2", 17, 1),
    ("resnet50_hard95", "layer3.2.conv2", 17, 1),
    ("googlenet", "inception4a", 5, 0),
]
N_GOOD = 5
# unit index -> how many of the N_GOOD valid participants answer it correctly
GOOD_CORRECT = {0: 5, 1: 3, 2: 1, 3: 4}


def _urls(task: int, trial: int) -> dict:
    base = f"{HOST}/task_{task}/trials/trial_{trial}"
    return dict(max_query=f"{base}/queries/max.png", min_query=f"{base}/queries/min.png",
                max_references=str([f"{base}/references/max_{i}.png" for i in range(9)]),
                min_references=str([f"{base}/references/min_{i}.png" for i in range(1, 10)]))


def response_rows(participant: str, task: int, correct_of_unit, *, catch_correct=(1,) * 6,
                  demo_blocks: int = 1, total_s: float = 600.0, instruction_s: float = 60.0,
                  buttons=None) -> list[dict]:
    """One participant response: demo blocks, one main trial per unit, then catch trials."""
    rows, t_index, time_ms = [], 0, instruction_s * 1000.0
    plan = []
    for _ in range(demo_blocks):
        plan += [("demo", j) for j in range(2)]
    plan += [("main", u) for u in range(len(UNITS))] + [("catch", c) for c in range(len(catch_correct))]
    step = (total_s * 1000.0 - time_ms) / len(plan)
    for n, (kind, k) in enumerate(plan):
        time_ms += step
        row = dict(participant_id=participant, worker_id=participant, task_id=f"task-{task}",
                   trial_index=t_index, rt=step, time_elapsed=time_ms, confidence=2,
                   is_demo=kind == "demo", catch_trial=kind == "catch", switched_queries=False)
        if kind == "main":
            model, layer, channel, batch = UNITS[k]
            ok = bool(correct_of_unit(k))
            row.update(model=model, layer=layer, channel=str(channel), batch=batch,
                       mode="natural", correct=ok, **_urls(task, 1))
        elif kind == "catch":
            row.update(model="catch/manual", layer="catch", channel="c", batch=-1,
                       mode="catch_trial", correct=bool(catch_correct[k]), **_urls(task, 2))
        else:
            row.update(model="demo", layer="demo", channel="d", batch=-1, mode="natural",
                       correct=True, **_urls(task, 1 + k))
            row["max_query"] = f"{HOST}/demo/trial_{k}/queries/max.png"
        row["choice"] = "b" if row["correct"] else "a"
        row["button_pressed"] = (buttons or (lambda i: 0 if i % 2 else 3))(n)
        rows.append(row)
        t_index += 1
    return rows


def build_table() -> pd.DataFrame:
    """Five valid participants plus one careless participant per exclusion criterion."""
    rows = []
    for p in range(N_GOOD):
        rows += response_rows(f"good{p}", p, lambda u, p=p: p < GOOD_CORRECT[u])
    always = lambda u: True  # careless participants all answer correctly: inclusion would show
    rows += response_rows("bad_catch", 10, always, catch_correct=(1, 1, 0, 0, 0, 0))
    rows += response_rows("bad_fast", 11, always, total_s=100.0, instruction_s=20.0)
    rows += response_rows("bad_slow", 12, always, total_s=3000.0)
    rows += response_rows("bad_instructions", 13, always, instruction_s=5.0)
    rows += response_rows("bad_rows", 14, always, buttons=lambda i: 0)
    rows += response_rows("bad_demo", 15, always, demo_blocks=4)
    rows += response_rows("multi", 16, always) + response_rows("multi", 17, always)
    table = pd.DataFrame(rows)
    # booleans as strings, the way a CSV round trip delivers them
    for column in ("correct", "is_demo", "catch_trial"):
        table[column] = table[column].map({True: "True", False: "False"})
    return table


def expected_his() -> dict:
    """(model label, layer, channel) -> HIS from the valid participants alone."""
    return {(m, l, c): GOOD_CORRECT[u] / N_GOOD for u, (m, l, c, _) in enumerate(UNITS)}
