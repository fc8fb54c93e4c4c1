#!/usr/bin/env bash
# Create .venv if it is missing and install requirements/<set>.txt into it (set: base or dev).
#
# Installs only when the requirements changed: a stamp file named after a hash of every
# requirements file (.venv/.installed-<set>-<hash>) records what the venv already holds, so a
# repeated `make run` or `make test` costs a few milliseconds. A dev install includes base.
set -euo pipefail

cd "$(dirname "$0")/.."
set_name=${1:-base}
requirements=requirements/$set_name.txt
venv=.venv

if [[ ! -f $requirements ]]; then
    echo "venv.sh: no such requirements file: $requirements" >&2
    exit 2
fi

# Return success when $1 is a Python interpreter of at least 3.11.
python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# Print the interpreter to build the venv from: $PYTHON if set, else Debian's /usr/bin/python3
# (markedly faster than a pyenv build here), else the first python3.x on PATH that is new enough.
pick_python() {
    local candidate
    for candidate in ${PYTHON:-} /usr/bin/python3 python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ -x $venv/bin/python ]] && ! python_ok "$venv/bin/python"; then
    echo "venv.sh: $venv is broken or older than Python 3.11; recreating it" >&2
    rm -rf "$venv"
fi

if [[ ! -x $venv/bin/python ]]; then
    if ! python=$(pick_python); then
        echo "venv.sh: Python 3.11 or newer is required and none was found." >&2
        echo "  Install it (Debian/Ubuntu: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3." >&2
        exit 1
    fi
    echo "Creating $venv with $python ($("$python" --version 2>&1))"
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        echo "venv.sh: '$python -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)." >&2
        exit 1
    fi
fi

hash=$(cat requirements/*.txt | sha256sum | cut -c1-16)
stamp=$venv/.installed-$set_name-$hash
# A dev install already holds everything base asks for.
if [[ -e $stamp || ($set_name == base && -e $venv/.installed-dev-$hash) ]]; then
    exit 0
fi

echo "Installing $requirements into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
rm -f "$venv"/.installed-*
touch "$stamp"
