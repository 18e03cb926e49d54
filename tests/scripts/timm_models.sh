#!/usr/bin/env bash
# timm's own model tests (tests/test_models.py from the sdist of the installed timm: the wheel has
# no tests) on our networks as registered by inceptionv4.register_timm() (iv4_*). `make test` runs it.
#
# One line of the file is extended, and printed here: test_model_forward_features exempts timm's
# valid-padding Inception networks (inception_v3*, inception_v4*, inception_resnet_v2*) by name
# from its lower bound on feature-map sizes, which unpadded convolutions cannot meet at 75 px.
# Ours are those networks under another name, so the exemption is extended to iv4_*.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute, without leaving the venv
ROOT=$PWD
VERSION=$("$PY" -c "import timm; print(timm.__version__)")
DIR=.venv/timm-tests/$VERSION
if [ ! -f "$DIR/tests/test_models.py" ]; then
    rm -rf "$DIR" && mkdir -p "$DIR"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "timm==$VERSION" -d "$DIR/sdist"
    tar -xzf "$DIR"/sdist/timm-*.tar.gz -C "$DIR" --strip-components=1
fi
FILE=$DIR/tests/test_models.py
OLD="('inception_v3*', 'inception_v4*', 'inception_resnet_v2*')"
NEW="('inception_v3*', 'inception_v4*', 'inception_resnet_v2*', 'iv4_*')"
grep -qF "$NEW" "$FILE" || { grep -qF "$OLD" "$FILE" && sed -i "s/$(printf '%s' "$OLD" | sed 's/[*]/\\*/g')/$NEW/" "$FILE"; }
grep -nF "$NEW" "$FILE" || { echo "timm $VERSION: the valid-padding exemption line has changed; see this script"; exit 1; }
cd "$DIR"
PYTHONPATH="$ROOT/tests/scripts" "$PY" -m pytest -q -p iv4_timm_plugin -p no:cacheprovider -W ignore \
    -n "${TEST_WORKERS:-2}" tests/test_models.py -k iv4_ "$@"
