#!/bin/sh
# The main job on the embedded default: a SQLite catalog, local folders, no servers.
# Registers a folder of real files, copies it by the policies (scheduler and workers
# in one process), then registers an example catalog and shows what is due.
set -eu
cd "$(dirname "$0")/.."
CONFIG=examples/config.yaml
rm -rf demo && mkdir -p demo/local/sample-1
printf 'ACGT\nACGT\n' > demo/local/sample-1/reads.fastq
printf 'sample\tcount\nA\t1\n' > demo/local/sample-1/counts.tsv
resolwe-storage --config "$CONFIG" migrate
resolwe-storage --config "$CONFIG" ingest local demo/local/sample-1 --key sample-1 \
    --slug 00hrfastqgz-66 --process-type data:reads:fastq:
echo "--- scan once and run the jobs in this process: sample-1 is copied to archive"
resolwe-storage --config "$CONFIG" run --once
find demo/archive -type f | sort
resolwe-storage --config "$CONFIG" import examples/catalog.json
resolwe-storage --config "$CONFIG" status
echo "--- due now:"
resolwe-storage --config "$CONFIG" plan
echo "--- due on 2026-02-01, as JSON:"
resolwe-storage --config "$CONFIG" plan --now 2026-02-01T00:00:00Z --json
echo "--- why is alignment-1 not copied to GCS?"
resolwe-storage --config "$CONFIG" plan --now 2026-02-01T00:00:00Z --explain alignment-1 | sed -n '1,9p'
