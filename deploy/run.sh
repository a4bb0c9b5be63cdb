#!/usr/bin/env bash
# Set up .venv/ and run cleftscore on this machine.
# Until the DICOM service lands, this preprocesses a sample photo (a real face
# shipped with matplotlib) into out/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
sample=$(.venv/bin/python -c "import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path()) / 'sample_data' / 'grace_hopper.jpg')")
exec .venv/bin/cleftscore preprocess "$sample" --size 1024 --out out/sample
