# Sourced by the SDK test scripts: installs google-genai and openai from PyPI into a venv
# (PLANTAIN_PYVENV, default $TMPDIR/plantain-sdk-venv) once, and sets PY to its python.
VENV=${PLANTAIN_PYVENV:-${TMPDIR:-/tmp}/plantain-sdk-venv}
PKGS=("google-genai>=1.50" "openai>=1.100")
if [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" 2> /dev/null || { rm -rf "$VENV"; false; }; then
  PY="$VENV/bin/python"
  "$PY" -c "import google.genai, openai" 2> /dev/null || "$PY" -m pip install --quiet "${PKGS[@]}"
else
  # No venv module (Debian without python3-venv): install into a plain folder instead.
  PY=python3
  export PYTHONPATH="$VENV/site${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import google.genai, openai" 2> /dev/null || python3 -m pip install --quiet --target "$VENV/site" "${PKGS[@]}"
fi
