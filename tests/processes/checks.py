"""Checks shared by the process-model trials (testsupport/trials.py runs them)."""

from __future__ import annotations

from testsupport.trials import Model, TrialResult


def failures(result: TrialResult, model: Model, *, contents: bool = True) -> list[str]:
    """What is wrong with one trial: a tree still running at grace + margin (killed, so
    "hung"), another exit status than the model gives after SIGTERM, and, with
    ``contents``, any acknowledged write not on the remote or with other bytes there."""
    found = []
    if result.acked == 0:
        found.append("no write was acknowledged, so the trial checked nothing")
    if result.hung:
        found.append("hung: still running at grace + margin, SIGKILLed")
    elif result.returncode != model.exit_status:
        found.append(f"exit {result.returncode}, expected {model.exit_status} ({model.why})")
    if contents and result.missing:
        found.append(
            f"{len(result.missing)} acknowledged writes not on the remote, e.g. "
            f"{result.missing[:3]}"
        )
    if contents and result.wrong:
        found.append(f"{len(result.wrong)} with other bytes on the remote, e.g. {result.wrong[:3]}")
    return found


def report(results: list[TrialResult], model: Model, *, contents: bool = True) -> str:
    """One line per trial, then the failures and the log tail of the first failing one;
    empty when every trial passed."""
    failing = [(r, failures(r, model, contents=contents)) for r in results]
    failing = [(r, f) for r, f in failing if f]
    if not failing:
        return ""
    lines = [f"{len(failing)} of {len(results)} trials failed:"]
    lines += [r.summary() for r in results]
    first, problems = failing[0]
    lines += ["", f"first failing trial (seed {first.seed}):", *problems, "", first.log_tail]
    return "\n".join(lines)
