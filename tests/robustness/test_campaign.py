"""Bad input over every public entry point: a clear error or a correct result, never worse.

The default run draws a few cases per family (an argument of an entry point)
and fails on the first case that is not ``ok-result``/``ok-error`` (see
``_harness``). ``--runslow`` runs the full campaign (at least 1,500 cases),
writes the counts per entry point as JSON and prints the table.

Families in modules being changed elsewhere carry their known defect
(``_known.KNOWN``) and are marked ``xfail(strict=False)``.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

import _targets_apr  # noqa: F401  (registers its families)
import _targets_cli  # noqa: F401
import _targets_cp  # noqa: F401
import _targets_data  # noqa: F401
import _targets_kron  # noqa: F401
import _targets_lstsq  # noqa: F401
import _targets_masked  # noqa: F401
import _targets_nn  # noqa: F401
import _targets_nonneg  # noqa: F401
import _targets_tenalg  # noqa: F401
import _targets_tensors  # noqa: F401
import _targets_tucker  # noqa: F401
import pytest
from _harness import GOOD, Outcome, count_table, format_table, run_case
from _known import KNOWN
from _registry import REGISTRY, Family, has_module
from hypothesis import HealthCheck, Phase, given, settings

#: examples per family: the default run (a few hundred cases in all) and the full campaign
DEFAULT_EXAMPLES = int(os.environ.get("TENSORFACT_CAMPAIGN_EXAMPLES", "3"))
FULL_EXAMPLES = int(os.environ.get("TENSORFACT_CAMPAIGN_FULL_EXAMPLES", "25"))
FULL_MINIMUM = 1500

_OUTCOMES: list[Outcome] = []


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate], print_blob=False,
                    suppress_health_check=list(HealthCheck))


def _params():
    for fam in REGISTRY:
        marks = []
        if fam.needs is not None:
            marks.append(pytest.mark.skipif(not has_module(fam.needs),
                                            reason=f"needs {fam.needs}"))
        if fam.id in KNOWN:
            marks.append(pytest.mark.xfail(strict=False, reason=KNOWN[fam.id]))
        yield pytest.param(fam, id=fam.id, marks=marks)


def test_registry_is_unique():
    ids = [f.id for f in REGISTRY]
    assert len(ids) == len(set(ids))
    assert set(KNOWN) <= set(ids), set(KNOWN) - set(ids)


@pytest.fixture(scope="module")
def default_table(request, tmp_path_factory):
    yield _OUTCOMES
    if not _OUTCOMES:
        return
    table = count_table(_OUTCOMES)
    out = tmp_path_factory.mktemp("robustness") / "counts-default.json"
    out.write_text(json.dumps(table, indent=1))
    capman = request.config.pluginmanager.getplugin("capturemanager")
    shown = capman.global_and_fixture_disabled() if capman is not None else nullcontext()
    with shown:
        print(f"\nbad-input campaign, default run ({len(_OUTCOMES)} cases; {out}):")
        print(format_table(table))


@pytest.mark.parametrize("family", list(_params()))
def test_family(family: Family, default_table):
    failed: list[str] = []

    @_settings(DEFAULT_EXAMPLES)
    @given(family.strategy)
    def run(case):
        out = run_case(case)
        if not (failed and failed[-1] == out.describe()):  # Hypothesis replays a failure
            default_table.append(out)
        if out.kind not in GOOD:
            failed.append(out.describe())
        assert out.kind in GOOD, out.describe()

    run()


@pytest.mark.slow
def test_full_campaign(tmp_path, capsys):
    outcomes: list[Outcome] = []
    for fam in REGISTRY:
        if fam.needs is not None and not has_module(fam.needs):
            continue

        @_settings(FULL_EXAMPLES)
        @given(fam.strategy)
        def run(case):
            outcomes.append(run_case(case))

        run()
    table = count_table(outcomes)
    bad = [o for o in outcomes if o.kind not in GOOD]
    folder = tmp_path / "robustness"
    folder.mkdir()
    (folder / "counts.json").write_text(json.dumps(table, indent=1))
    (folder / "failures.json").write_text(json.dumps(
        [dict(target=o.case.target, family=o.case.family, input=o.case.label, outcome=o.kind,
              detail=o.detail, known=KNOWN.get(f"{o.case.target}/{o.case.family}"))
         for o in bad], indent=1))
    with capsys.disabled():
        print(f"\nbad-input campaign, full run: {len(outcomes)} cases ({folder})")
        print(format_table(table))
        for o in bad:
            tag = "known" if f"{o.case.target}/{o.case.family}" in KNOWN else "NEW"
            print(f"  [{tag}] {o.describe()}")
    assert len(outcomes) >= FULL_MINIMUM
    new = [o.describe() for o in bad if f"{o.case.target}/{o.case.family}" not in KNOWN]
    assert not new, "\n".join(new)
