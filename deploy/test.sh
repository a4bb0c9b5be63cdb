#!/usr/bin/env bash
# Set up .venv/ and the Debian tools the tests use as real peers, then run the tests.
# PostgreSQL tests use $CLEFTSCORE_TEST_POSTGRES_URL (default: the local server at
# 127.0.0.1:5432, database "test"); they skip, saying why, where none answers.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in storescu storescp img2dcm dcmdump dciodvfy Orthanc pdftoppm pdftotext; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian packages for: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk dicom3tools orthanc poppler-utils >/dev/null
  else
    echo "Missing ${missing[*]}: install dcmtk dicom3tools orthanc poppler-utils; tests needing them will skip." >&2
  fi
fi
bash deploy/setup.sh test
export CLEFTSCORE_TEST_POSTGRES_URL=${CLEFTSCORE_TEST_POSTGRES_URL-postgresql+psycopg2://postgres@127.0.0.1:5432/test}
exec .venv/bin/python -m pytest "$@"
