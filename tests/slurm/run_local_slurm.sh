#!/usr/bin/env bash
# A real SLURM test of profiles/slurm on this one machine.
#
#   sudo tests/slurm/run_local_slurm.sh [SCRATCH_DIR]      (needs root)
#
# 1. installs the Debian packages slurm-wlm and munge if missing;
# 2. writes a one-node slurm.conf for this host (linuxproc process tracking,
#    no task plugin, no accounting, job completions to a text file) as
#    /etc/slurm/slurm.conf, the path srun reads inside jobs; it refuses to
#    touch an existing slurm.conf it did not write;
# 3. starts munged (own key and socket), slurmctld and slurmd in the
#    foreground of background processes and records their PIDs;
# 4. runs the tests/configs/tiny.yaml workflow (ERM at 3 epochs) with
#    `--profile profiles/slurm --cache pretrain erm` in a scratch folder, under setsid;
#    meanwhile it scancels one ERM job after its first epoch, which Snakemake
#    must resubmit (profile `retries`) and which must resume from its
#    checkpoint;
# 5. checks from SLURM's own records (the job completion file, the per-job
#    SLURM logs and slurmctld's log) that every job of the DAG ran as a
#    COMPLETED SLURM job, and that the cancelled ERM job resumed;
# 6. runs one ERM cell again in a second folder on SLURM with the same
#    SNAKEMAKE_OUTPUT_CACHE: pretrain and erm must come from the cache;
# 7. stops only the daemons it started, by PID, and removes what it wrote.
#
# Environment: LLR_SLURM_TIMEOUT (seconds for the workflow, default 1500),
# KEEP=1 keeps the scratch folder. Exit status 0 only when every check passed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRATCH=${1:-$(mktemp -d /tmp/llr-slurm.XXXXXX)}
mkdir -p "$SCRATCH"
SCRATCH=$(cd "$SCRATCH" && pwd)
TIMEOUT=${LLR_SLURM_TIMEOUT:-1500}
CONF=/etc/slurm/slurm.conf
MARK="# written by llr tests/slurm/run_local_slurm.sh"
T0=$(date +%s)

log() { echo "[local-slurm $(($(date +%s) - T0))s] $*"; }
die() { echo "[local-slurm] FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (installs packages, writes $CONF, starts daemons)"
if [ -x "$REPO/.venv/bin/snakemake" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi
command -v snakemake >/dev/null || die "snakemake not found (make setup, or activate the environment)"

# Only one local cluster at a time on this machine.
exec 9>/run/llr-local-slurm.lock
flock -n 9 || die "another run_local_slurm.sh is running"

# ------------------------------------------------------------ cleanup
PIDS=()          # daemons we started, stopped in reverse order
CONF_WRITTEN=0
POLICY_CREATED=0
cleanup() {
    local rc=$?
    set +e
    if [ -n "${SMK_PID:-}" ] && kill -0 "$SMK_PID" 2>/dev/null; then
        log "stopping the workflow (session $SMK_PID)"
        kill -TERM -- "-$SMK_PID" 2>/dev/null
        sleep 5
        kill -KILL -- "-$SMK_PID" 2>/dev/null
    fi
    if [ "$CONF_WRITTEN" = 1 ] && [ ${#PIDS[@]} -gt 0 ]; then
        scancel --quiet --user="$(id -un)" 2>/dev/null   # our cluster: every job is ours
        sleep 2
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    if [ "$CONF_WRITTEN" = 1 ] && head -1 "$CONF" 2>/dev/null | grep -qF "$MARK"; then
        rm -f "$CONF"
    fi
    if [ "$POLICY_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$rc" = 0 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$SCRATCH"
    else
        echo "[local-slurm] scratch folder kept: $SCRATCH"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge (Debian packages)"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # keep the packages from starting system daemons we would not own
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_CREATED=1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
    if [ "$POLICY_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=0; fi
fi

# ------------------------------------------------------------ 2. slurm.conf
if [ -e "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script: not touching a real SLURM set-up"
fi
mkdir -p /etc/slurm "$SCRATCH"/{munge,state,spool,logs}
chmod 700 "$SCRATCH/munge"
HOST=$(hostname -s)
read -r CTLD_PORT SLURMD_PORT < <(python3 - <<'EOF'
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
EOF
)
NCPU=$(nproc)
MUNGE_SOCK="$SCRATCH/munge/munge.socket"
cat > "$CONF" <<EOF
$MARK (scratch $SCRATCH)
ClusterName=llrtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/slurmctld.pid
SlurmdPidFile=$SCRATCH/slurmd.pid
SlurmctldLogFile=$SCRATCH/logs/slurmctld.log
SlurmdLogFile=$SCRATCH/logs/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SCRATCH/logs/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
MailProg=/bin/true
# The profile asks for cluster-sized memory (erm: 32 GB); this node says it has
# it. Memory is not a consumable here (CR_Core), so nothing is reserved.
SlurmdParameters=config_overrides
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=256000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
CONF_WRITTEN=1
export SLURM_CONF=$CONF

# ------------------------------------------------------------ 3. daemons
dd if=/dev/urandom of="$SCRATCH/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$SCRATCH/munge/munge.key"
munged --foreground --force --socket="$MUNGE_SOCK" --key-file="$SCRATCH/munge/munge.key" \
    --pid-file="$SCRATCH/munge/munged.pid" --log-file="$SCRATCH/munge/munged.log" \
    --seed-file="$SCRATCH/munge/munged.seed" > "$SCRATCH/logs/munged.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$MUNGE_SOCK" ] && break; sleep 0.2; done
[ -S "$MUNGE_SOCK" ] || die "munged did not start: $(cat "$SCRATCH/logs/munged.out" "$SCRATCH/munge/munged.log" 2>/dev/null)"

slurmctld -D -i -f "$CONF" > "$SCRATCH/logs/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$CONF" -N "$HOST" > "$SCRATCH/logs/slurmd.out" 2>&1 &
PIDS+=($!)
log "daemons started: munged ${PIDS[0]}, slurmctld ${PIDS[1]}, slurmd ${PIDS[2]}"
for _ in $(seq 120); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || die "node not idle (state '$state'); see $SCRATCH/logs"
log "cluster up: $(sinfo -h -o '%P %D %t %c')"

# ------------------------------------------------------------ 4. workflow
RUN=$SCRATCH/run
mkdir -p "$RUN"
cd "$SCRATCH"   # Snakemake looks up profile names (and `default`) in the current folder
cat > "$SCRATCH/slurm_test.yaml" <<'EOF'
# tiny.yaml with 3 ERM epochs, so that a cancelled ERM job has a checkpoint
erm:
  synth_waterbirds: {epochs: 3}
EOF
export SNAKEMAKE_OUTPUT_CACHE=$SCRATCH/cache
mkdir -p "$SNAKEMAKE_OUTPUT_CACHE"
SMK_ARGS=(-s "$REPO/Snakefile" --profile "$REPO/profiles/slurm"
          --configfile "$REPO/tests/configs/tiny.yaml" "$SCRATCH/slurm_test.yaml")
snakemake "${SMK_ARGS[@]}" --directory "$RUN" --dry-run --quiet rules > "$SCRATCH/dryrun.txt" 2>&1 \
    || die "dry run failed: $(tail -20 "$SCRATCH/dryrun.txt")"
# expected jobs per rule (rule `all` has no action and is never submitted)
awk '/^job +count/ {on=1; next} on && /^-/ {next} on && NF==2 && $1!="total" && $1!="all" {print $1, $2} on && NF<2 {on=0}' \
    "$SCRATCH/dryrun.txt" > "$SCRATCH/expected_jobs.txt"
[ -s "$SCRATCH/expected_jobs.txt" ] || die "no job table in the dry run: $(cat "$SCRATCH/dryrun.txt")"
log "expected jobs: $(tr '\n' ' ' < "$SCRATCH/expected_jobs.txt")"

export LLR_SLURM_STATUS_COMMAND=squeue     # no accounting here, so no sacct
unset LLR_SLURM_ACCOUNT LLR_SLURM_PARTITION LLR_SLURM_GPU_PARTITION LLR_SLURM_GPU_MODEL
log "running the workflow on SLURM (log: $SCRATCH/snakemake.log)"
T_RUN=$(date +%s)
# --cache takes rule names and comes last, after any target. Name them: a bare
# --cache is not passed on to the SLURM jobs (Snakemake 9.27), which then
# neither store nor restore.
CACHE=(--cache pretrain erm)
FAST=(--slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2)
setsid snakemake "${SMK_ARGS[@]}" --directory "$RUN" "${FAST[@]}" "${CACHE[@]}" > "$SCRATCH/snakemake.log" 2>&1 &
SMK_PID=$!

# scancel the ERM job of one cell once its first epoch is checkpointed
CELL=train_ratio1.0_none
ERM_LOG="$RUN/logs/erm/synth_waterbirds/seed1/$CELL.log"
RESUME="$RUN/results/synth_waterbirds/seed1/erm/$CELL/resume.pt"
CANCELLED=""
while kill -0 "$SMK_PID" 2>/dev/null; do
    if [ -z "$CANCELLED" ] && [ -f "$RESUME" ] && grep -q "^epoch 1/" "$ERM_LOG" 2>/dev/null; then
        jl=$(ls "$RUN"/logs/slurm/rule_erm/*"$CELL"*/*.log 2>/dev/null | head -1 || true)
        if [ -n "$jl" ]; then
            CANCELLED=$(basename "$jl" .log)
            log "scancel $CANCELLED (erm $CELL, after epoch 1)"
            scancel "$CANCELLED"
        fi
    fi
    if [ $(($(date +%s) - T_RUN)) -gt "$TIMEOUT" ]; then
        die "workflow still running after ${TIMEOUT}s: $(tail -20 "$SCRATCH/snakemake.log")"
    fi
    sleep 0.5
done
set +e; wait "$SMK_PID"; SMK_RC=$?; set -e
SMK_PID=""
T_WF=$(($(date +%s) - T_RUN))
[ "$SMK_RC" = 0 ] || die "snakemake exited $SMK_RC: $(tail -40 "$SCRATCH/snakemake.log")"
[ -f "$RUN/results/figures/fig4.png" ] || die "results/figures/fig4.png missing"
log "workflow finished in ${T_WF}s"

# ------------------------------------------------------------ 5. SLURM's records
sleep 1
python3 - "$SCRATCH" "$RUN" "$CANCELLED" "$CELL" <<'EOF'
import re, sys
from collections import Counter
from pathlib import Path

scratch, run, cancelled, cell = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
expected = Counter({r: int(n) for r, n in (l.split() for l in (scratch / "expected_jobs.txt").read_text().splitlines())})
# rules the workflow declares local run in Snakemake's own process: not SLURM jobs
local = set(re.findall(r"^localrule (\w+):", (scratch / "snakemake.log").read_text(), re.M))
for rule in local:
    expected.pop(rule, None)
# ... but the work itself must have gone to SLURM
problems = [f"rule {r} ran locally, not as a SLURM job" for r in ("prepare_synthetic", "pretrain", "erm")
            if r in local]
# SLURM's job completion records: JobId -> JobState
state = {}
for line in (scratch / "logs/jobcomp.txt").read_text().splitlines():
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    state[f["JobId"]] = f["JobState"]
ctld = (scratch / "logs/slurmctld.log").read_text()
submitted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld))
# the executor's per-job SLURM logs: logs/slurm/rule_<rule>/<wildcards>/<jobid>.log
completed, other = Counter(), []
for p in sorted((run / "logs/slurm").glob("rule_*/**/*.log")):
    rule, jobid = p.relative_to(run / "logs/slurm").parts[0][len("rule_"):], p.stem
    if jobid not in submitted:
        problems.append(f"{p}: job {jobid} not in slurmctld's submissions")
    st = state.get(jobid)
    if st == "COMPLETED":
        completed[rule] += 1
    else:
        other.append((rule, jobid, st))
for rule, n in sorted(expected.items()):
    if completed[rule] != n:
        problems.append(f"rule {rule}: {completed[rule]} COMPLETED SLURM jobs, DAG has {n}")
extra = set(completed) - set(expected)
if extra:
    problems.append(f"SLURM jobs of rules not in the DAG: {sorted(extra)}")
if cancelled:
    if state.get(cancelled) != "CANCELLED":
        problems.append(f"scancelled job {cancelled} has state {state.get(cancelled)}")
    log = (run / f"logs/erm/synth_waterbirds/seed1/{cell}.log").read_text()
    if "resumed from" not in log:
        problems.append(f"erm {cell}: the resubmitted job did not resume from its checkpoint:\n{log}")
else:
    problems.append("no ERM job was cancelled (the checkpoint was never seen)")
print(f"[local-slurm] SLURM jobs COMPLETED per rule: {dict(sorted(completed.items()))}")
print(f"[local-slurm] other SLURM jobs: {other}")
print(f"[local-slurm] {len(submitted)} submissions in slurmctld.log, {len(state)} jobcomp records"
      + (f"; local rules: {sorted(local)}" if local else ""))
if problems:
    print("[local-slurm] FAIL:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("[local-slurm] every DAG job ran as a COMPLETED SLURM job; the cancelled ERM job resumed")
EOF

# ------------------------------------------------------------ 6. cache across workflows
RUN2=$SCRATCH/run2
mkdir -p "$RUN2"
TARGET=results/synth_waterbirds/seed1/erm/$CELL/metrics.json
log "second workflow, same cache: $TARGET (log: $SCRATCH/snakemake2.log)"
T_RUN2=$(date +%s)
timeout "$TIMEOUT" setsid snakemake "${SMK_ARGS[@]}" --directory "$RUN2" "${FAST[@]}" "$TARGET" "${CACHE[@]}" \
    > "$SCRATCH/snakemake2.log" 2>&1 || die "second workflow failed: $(tail -30 "$SCRATCH/snakemake2.log")"
T_WF2=$(($(date +%s) - T_RUN2))
python3 - "$RUN2" "$SCRATCH/snakemake2.log" "$SNAKEMAKE_OUTPUT_CACHE" "$CELL" <<'EOF'
import os, sys
from pathlib import Path
run, log, cache, cell = Path(sys.argv[1]), Path(sys.argv[2]).read_text(), Path(sys.argv[3]), sys.argv[4]
outs = [f"results/synth_waterbirds/seed1/erm/{cell}/{o}" for o in
        ("embeddings.npy", "head.npz", "metrics.json", "log.csv", "model.pt")]
outs.append("results/synth_waterbirds/pretrain/backbone.pt")
problems = []
for f in outs:
    p = run / f
    if not (p.is_symlink() and Path(os.readlink(p)).parent == cache):
        problems.append(f"{f} is not restored from the cache")
for f in (f"logs/erm/synth_waterbirds/seed1/{cell}.log", "logs/pretrain/synth_waterbirds.log"):
    if (run / f).exists() and "epoch" in (run / f).read_text():
        problems.append(f"{f}: trained again")
# the restoring happened inside the SLURM jobs of those rules
for rule in ("erm", "pretrain"):
    text = "".join(q.read_text() for q in (run / "logs/slurm" / f"rule_{rule}").rglob("*.log"))
    if "from cache" not in text:
        problems.append(f"no SLURM job log of rule {rule} says its outputs came from the cache")
if problems:
    print("[local-slurm] FAIL:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("[local-slurm] second workflow: pretrain and erm restored from the cache, nothing trained")
EOF
log "PASS (workflow ${T_WF}s, cached second workflow ${T_WF2}s, total $(($(date +%s) - T0))s)"
