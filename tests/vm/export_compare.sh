#!/bin/sh
# Runs in a guest (tests/vm/test_scenario_guest.py): for every scenario file under
# $COWLAB_PAYLOAD/scenarios and every driver given as an argument, records cowlab's own
# verdict on this kernel (`cowlab scenario run`) and the exit status of the script exported
# for it on the host ($COWLAB_PAYLOAD/scripts/NAME.DRIVER.sh, run with /bin/sh and nothing of
# cowlab in PATH) as one JSON line in $COWLAB_RESULTS.  The host compares them; this script
# decides nothing.
set -u
mkfs.ext4 -q -F /dev/cowlab/scratch0 || exit 2
mkdir -p /run/cowlab/work && mount /dev/cowlab/scratch0 /run/cowlab/work || exit 2
W=/run/cowlab/work
for f in "$COWLAB_PAYLOAD"/scenarios/*.yaml; do
  name=$(basename "$f" .yaml)
  for d in "$@"; do
    rm -f "$W/run.jsonl"
    cowlab scenario run --driver "$d" --work-dir "$W" --out "$W/run.jsonl" "$f" 2> "$W/run.err"
    status=$(sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p' "$W/run.jsonl" | head -n 1)
    COWLAB_EXPORT_DIR=$W PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      /bin/sh "$COWLAB_PAYLOAD/scripts/$name.$d.sh" > "$W/script.out" 2>&1
    rc=$?
    left=$(ls -d "$W"/cowlab-export.* 2>/dev/null | wc -l)
    # The outputs, base64 so that JSON needs no escaping here.
    out=$(base64 -w0 < "$W/script.out")
    err=$(base64 -w0 < "$W/run.err")
    printf '{"scenario": "%s", "driver": "%s", "cowlab": "%s", "script_rc": %d, "left_behind": %s, "output_b64": "%s", "cowlab_stderr_b64": "%s"}\n' \
      "$name" "$d" "${status:-none}" "$rc" "$left" "$out" "$err" >> "$COWLAB_RESULTS"
  done
done
