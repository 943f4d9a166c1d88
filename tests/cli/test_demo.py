"""The bundled default model and demo mixture work right after install."""

import json

from click.testing import CliRunner

from intsim.cli import main
from intsim.defaults import DEFAULT_MODEL, DEMO_MIX, DEMO_REFERENCES


def test_demo_separates_and_scores(tmp_path):
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"]["path"] == str(DEFAULT_MODEL)
    assert doc["model"]["training"]["trained"] is True
    assert set(doc["metrics"]["stems"]) == {"s1", "s2"}
    assert all((tmp_path / "default" / "demo_mix" / f"{s}.wav").is_file() for s in ("s1", "s2"))
    assert doc["counts"]["acc_overflows"] == 0


def test_run_accepts_default_as_the_model(tmp_path):
    args = ["run", "default", str(DEMO_MIX), "-o", str(tmp_path), "-r", str(DEMO_REFERENCES[0]), "-r",
            str(DEMO_REFERENCES[1]), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["mean"]["si_sdri"] > -50


def test_untrained_model_says_so(tmp_path, monkeypatch):
    from intsim import modelfile

    graph = modelfile.load(DEFAULT_MODEL)
    graph.metadata["training"] = {"trained": False}
    model = tmp_path / "random.npz"
    modelfile.save(graph, model)
    result = CliRunner().invoke(main, ["run", str(model), str(DEMO_MIX), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "untrained" in result.stderr
