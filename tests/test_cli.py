import json
import subprocess
import sys

from inceptionv4.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "inception_v4" in out and "42.7M" in out and "inception_resnet_v2_paper" in out


def test_info_json(capsys):
    assert main(["info", "inception_resnet_v2", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["num_params"] == card["params_recounted"] == 55_843_464
    assert [f["reduction"] for f in card["feature_info"]] == [2, 4, 8, 16, 32]


def test_unknown_model_is_one_clear_line():
    proc = subprocess.run(
        [sys.executable, "-m", "inceptionv4", "info", "inception_v9"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("inceptionv4 info: error: unknown model 'inception_v9'; known models:")
    assert "Traceback" not in proc.stderr
