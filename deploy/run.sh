#!/usr/bin/env bash
# Set up .venv/ and run the cleftscore DICOM service with embedded defaults:
# SQLite in ./data, local storage, in-process workers, the DEMO model bundle
# (random weights; every output is labelled DEMO — NOT FOR CLINICAL USE).
# Settings come from CLEFTSCORE_* environment variables (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
export CLEFTSCORE_DATA_DIR=${CLEFTSCORE_DATA_DIR:-$PWD/data}
export CLEFTSCORE_PORT=${CLEFTSCORE_PORT:-11112}
# On a CPU the paper's 2000 inversion steps take minutes per photo; the demo uses
# fewer unless told otherwise (a clinical installation keeps the paper's 2000).
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export CLEFTSCORE_INVERSION_STEPS=${CLEFTSCORE_INVERSION_STEPS:-200}
fi
cat >&2 <<MSG
Send a photo (dcmtk):
  img2dcm photo.jpg photo.dcm -k PatientID=P001 -k StudyDescription=Consultation
  storescu -xy -aec CLEFTSCORE localhost ${CLEFTSCORE_PORT} photo.dcm
Results go to CLEFTSCORE_DESTINATIONS (AE@host:port, comma-separated; now: '${CLEFTSCORE_DESTINATIONS:-none}')
and stay in ${CLEFTSCORE_DATA_DIR}/results. Watch with: .venv/bin/cleftscore status
MSG
exec .venv/bin/cleftscore serve --demo
