"""export from the CLI, checked against eager."""



from inceptionv4.cli import main



def test_export_cli(tmp_path, capsys):
    assert main(["export", str(tmp_path / "v4.onnx"), "--model", "inception_v4", "--input-size", "75"]) == 0
    assert "max |diff| vs eager" in capsys.readouterr().out
