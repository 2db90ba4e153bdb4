#!/usr/bin/env bash
# Checks the launch and deploy files with what this machine has; no GPU, SLURM, Kubernetes or Docker engine is
# needed, and none is run:
#   - shellcheck -x (following sourced files) on launch/mlagpt-run, launch/slurm/train.sbatch, deploy/*.sh,
#     deploy/bundle/*.sh, tests/support/fake_node_agent.sh and this script;
#   - launch/mlagpt-run: its --dry-run command line, the Prometheus targets it writes, an error for each kind of bad
#     input, a real local mpirun (-x variables arrive), and a two-"host" run whose ssh is a stand-in that starts the
#     daemon here with an empty environment, so that the ranks' placement is mpirun's own and only what -x passes
#     arrives; with MLAGPT_EXECUTABLE also a 2-rank `mlagpt train` whose every target is scraped while it runs and
#     which SIGUSR1 stops with a checkpoint (exit 138);
#   - launch/slurm/train.sbatch run with stand-ins for srun and scontrol: its #SBATCH lines, the train command it
#     starts, and the requeue after exit 138 only;
#   - deploy/k8s/mpijob.yaml parsed by PyYAML and its MPIJob fields checked against each other (with
#     MLAGPT_EXECUTABLE its train arguments also pass mlagpt's config validation);
#   - deploy/Dockerfile: its structure only (no Dockerfile linter is packaged for Debian 12, so this is no lint),
#     and with MLAGPT_EXECUTABLE whether the runtime stage's packages and the wheel's CUDA libraries cover the
#     executable's direct library dependencies.
# A tool that deploy/setup.sh installs (shellcheck, python3-yaml) missing: the other checks still run and the test
# exits 77 (skipped), or 1 under CI=true, where setup ran.
#   check_launch_files.sh SOURCE_DIR [MLAGPT_EXECUTABLE]
set -euo pipefail
src=$(cd "$1" && pwd)
mlagpt=${2:-}
run=$src/launch/mlagpt-run
py=/usr/bin/python3  # Debian's, whose yaml module is python3-yaml
failures=0
missing=()
pass() { echo "ok: $*"; }
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # a copy of mlagpt-run runs from here as nobody
# The settings of tests/CMakeLists.txt's MPI tests when run by hand; the daemons talk over loopback only.
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl_tcp_if_include=lo
# What mlagpt-run must pass to the ranks, and one variable it must not.
export NCCL_DEBUG=INFO NCCL_SOCKET_IFNAME=lo MLAGPT_CHECK_MARK='two words' CHECK_NOT_PASSED=1

# --- shellcheck
if command -v shellcheck >/dev/null 2>&1; then
  if (cd "$src" && shellcheck -x launch/mlagpt-run launch/slurm/train.sbatch deploy/*.sh deploy/bundle/*.sh \
    tests/support/fake_node_agent.sh tests/support/check_launch_files.sh); then
    pass "shellcheck $(shellcheck --version | awk '/^version:/ {print $2}'): launch/mlagpt-run, launch/slurm/train.sbatch, deploy/*.sh, deploy/bundle/*.sh, fake_node_agent.sh, this script"
  else
    fail "shellcheck (above)"
  fi
else
  echo "shellcheck is not installed (deploy/setup.sh installs it): the shell files were not checked"
  missing+=(shellcheck)
fi

# --- mlagpt-run --dry-run: the command line
words_of() { eval "words=($1)"; }  # a printed command line back into its words, as a shell reads it
line=$(cd "$work" && "$run" --dry-run --np 4 --hosts nodeA:2,nodeB:2 --ppn 2 --bind core --metrics-port 9400 \
  --targets ppn.json -- prog --flag 'an arg' 2>/dev/null)
echo "  dry run: $line"
words=()
words_of "$line"
want=(-np 4 --host "nodeA:2,nodeB:2" --map-by ppr:2:node --bind-to core -x MLAGPT_CHECK_MARK -x NCCL_DEBUG
  -x NCCL_SOCKET_IFNAME)
joined=" ${words[*]} "
ok=true
for ((i = 0; i < ${#want[@]}; i += 2)); do
  [[ $joined == *" ${want[i]} ${want[i + 1]} "* ]] || { fail "dry run: no '${want[i]} ${want[i + 1]}'"; ok=false; }
done
tail_words="${words[*]: -4}"
[ "$tail_words" = "prog --flag an arg --monitoring.metrics_address=0.0.0.0:9400" ] ||
  { fail "dry run: the program's words end as '$tail_words'"; ok=false; }
[[ $joined != *" CHECK_NOT_PASSED "* ]] || { fail "dry run: passes CHECK_NOT_PASSED"; ok=false; }
root_flag=false
[[ $joined != *" --allow-run-as-root "* ]] || root_flag=true
if [ "$EUID" -eq 0 ] && ! $root_flag; then fail "dry run as root: no --allow-run-as-root"; ok=false; fi
if [ "$EUID" -ne 0 ] && $root_flag; then fail "dry run as a user: --allow-run-as-root"; ok=false; fi
$ok && pass "dry run: -np, --host, ppr mapping, binding, -x of the NCCL_/MLAGPT_ variables only, the program's words quoted, --allow-run-as-root $($root_flag && echo "as root" || echo "absent as a user")"
defaults=$(cd "$work" && "$run" --dry-run --np 2 -- prog)
if [[ " $defaults " == *" --map-by slot --bind-to numa "* && " $defaults " != *" --host "* ]]; then
  pass "dry run defaults: --map-by slot --bind-to numa, no --host (mpirun's local default)"
else
  fail "dry run defaults: $defaults"
fi
if [ "$EUID" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
  cp "$run" "$work/mlagpt-run"
  as_user=$(cd "$work" && setpriv --reuid=nobody --regid=nogroup --clear-groups "$work/mlagpt-run" --dry-run --np 2 -- prog)
  if [[ " $as_user " != *" --allow-run-as-root "* ]]; then
    pass "dry run as nobody: no --allow-run-as-root"
  else
    fail "dry run as nobody: $as_user"
  fi
fi

# --- the targets file
check_targets() {  # FILE EXPECTED_JSON
  "$py" - "$1" "$2" <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))
want = json.loads(sys.argv[2])
if got != want:
    print("  got:  " + json.dumps(got))
    print("  want: " + json.dumps(want))
    sys.exit(1)
PY
}
group() { printf '{"targets": ["%s:%d"], "labels": {"rank": "%d", "local_rank": "%d", "node": "%s"}}' "$1" "$2" "$3" "$4" "$1"; }
four="[$(group nodeA 9400 0 0), $(group nodeA 9401 1 1), $(group nodeB 9400 2 0), $(group nodeB 9401 3 1)]"
if (cd "$work" && "$run" --dry-run --hosts nodeA:2,nodeB:2 --np 4 --metrics-port 9400 -- prog >/dev/null 2>&1) &&
  check_targets "$work/prometheus-targets.json" "$four"; then
  pass "targets of --hosts nodeA:2,nodeB:2 --np 4 --metrics-port 9400 (./prometheus-targets.json): nodeA:9400, nodeA:9401, nodeB:9400, nodeB:9401, ranks 0-3"
else
  fail "targets of --hosts nodeA:2,nodeB:2 --np 4 --metrics-port 9400"
fi
if check_targets "$work/ppn.json" "$four"; then
  pass "targets of --ppn 2 on the same hosts (--targets FILE)"
else
  fail "targets of --ppn 2 (--targets FILE)"
fi
three="[$(group a 9500 0 0), $(group a 9501 1 1), $(group b 9500 2 0)]"
printf '# two hosts\na slots=2\nb max_slots=4  # slots defaults to max_slots\n' >"$work/hostfile"
if (cd "$work" && "$run" --dry-run --hostfile hostfile --np 3 --metrics-port 9500 --targets hf.json -- prog >/dev/null 2>&1) &&
  check_targets "$work/hf.json" "$three"; then
  pass "targets of a hostfile, --np 3 short of its slots: a:9500, a:9501, b:9500"
else
  fail "targets of a hostfile"
fi

# --- bad input: a message naming the option, exit status 2, and mpirun never started
printf '#!/bin/sh\ntouch "%s/mpirun-ran"\n' "$work" >"$work/fake-mpirun"
chmod +x "$work/fake-mpirun"
bad_cases=(
  "--np 0 -- prog|--np '0': not a positive integer"
  "--np two -- prog|--np 'two': not a positive integer"
  "--ppn -1 -- prog|--ppn '-1': not a positive integer"
  "--np 5 --hosts nodeA:2,nodeB:2 -- prog|--np 5: more ranks than the 4 slots"
  "--np 5 --ppn 2 --hosts nodeA:4,nodeB:4 -- prog|--np 5: more ranks than --ppn 2 x 2 node(s) = 4"
  "--hosts nodeA:2 --hostfile $work/hostfile -- prog|--hosts and --hostfile"
  "--np 2 --|no program to run"
  "--np 2|no program to run"
  "--np 2 --frobnicate -- prog|unknown option '--frobnicate'"
  "--bind everything -- prog|--bind 'everything'"
  "--hosts nodeA -- prog|--hosts: 'nodeA' is not HOST:SLOTS"
  "--hostfile $work/no-such-file -- prog|--hostfile '$work/no-such-file'"
  "--np 2 --metrics-port 0 -- prog|--metrics-port '0'"
  "--metrics-port 9400 -- prog|--metrics-port: the number of ranks is not known"
  "--np 2 --metrics-port 9400 -- prog --monitoring.metrics_address=0.0.0.0:1|--metrics-port and --monitoring.metrics_address"
)
bad_ok=0
for case in "${bad_cases[@]}"; do
  read -ra args <<<"${case%%|*}"
  expected=${case#*|}
  status=0
  message=$(cd "$work" && MPIRUN="$work/fake-mpirun" "$run" "${args[@]}" 2>&1 >/dev/null) || status=$?
  if [ "$status" -eq 2 ] && [[ $message == *"$expected"* ]] && [ ! -e "$work/mpirun-ran" ]; then
    bad_ok=$((bad_ok + 1))
  else
    fail "mlagpt-run ${case%%|*}: exit $status, '$message' (wanted exit 2 and '$expected', no mpirun)"
    rm -f "$work/mpirun-ran"
  fi
done
[ "$bad_ok" -ne ${#bad_cases[@]} ] || pass "${#bad_cases[@]} kinds of bad input: exit 2 with the option named, mpirun not started"

# --- a real local run: the printed line, and the variables in every rank's environment
status=0
(cd "$work" && "$run" --np 2 -- env >local.out 2>local.err) || status=$?
marks=$(grep -c '^MLAGPT_CHECK_MARK=two words$' "$work/local.out" || true)
if [ "$status" -eq 0 ] && [ "$marks" -eq 2 ] && grep -q -- '-np 2 --map-by slot --bind-to numa -x MLAGPT_CHECK_MARK' "$work/local.err"; then
  pass "mlagpt-run --np 2 -- env: ran mpirun, printed its line, MLAGPT_CHECK_MARK in both ranks' environments"
else
  fail "mlagpt-run --np 2 -- env: exit $status, $marks ranks with MLAGPT_CHECK_MARK; stderr: $(head -c 2000 "$work/local.err")"
fi

# --- two "hosts": the stand-in ssh starts each daemon here with an empty environment and its own TMPDIR
cat >"$work/fake-ssh" <<EOF
#!/usr/bin/env bash
host=\$1
shift
mkdir -p "$work/tmp-\$host"
exec env -i PATH=/usr/bin:/bin HOME="\$HOME" TMPDIR="$work/tmp-\$host" FAKE_HOST="\$host" bash -c "\$*"
EOF
chmod +x "$work/fake-ssh"
# shellcheck disable=SC2016  # expanded by each rank's bash, not here
report='echo "rank=$OMPI_COMM_WORLD_RANK host=$FAKE_HOST local=$OMPI_COMM_WORLD_LOCAL_RANK mark=${MLAGPT_CHECK_MARK-unset} nccl=${NCCL_DEBUG-unset} other=${CHECK_NOT_PASSED-unset} last=$0"'
status=0
(cd "$work" && OMPI_MCA_plm_rsh_agent="$work/fake-ssh" timeout 120 "$run" --hosts nodeA:2,nodeB:2 --np 4 \
  --metrics-port 9400 --targets two.json -- bash -c "$report" >two.out 2>two.err) || status=$?
if [ "$status" -eq 0 ] && "$py" - "$work/two.json" "$work/two.out" <<'PY'; then
import json, re, sys
targets = {int(g["labels"]["rank"]): g for g in json.load(open(sys.argv[1]))}
seen = 0
for line in open(sys.argv[2]):
    m = re.match(r"rank=(\d+) host=(\S+) local=(\d+) mark=(.*) nccl=(\S+) other=(\S+) last=(\S+)$", line.strip())
    if not m:
        continue
    rank, host, local, mark, nccl, other, last = m.groups()
    g = targets[int(rank)]
    want = f"{host}:{9400 + int(local)}"
    problems = []
    if g["targets"] != [want] or g["labels"]["node"] != host or g["labels"]["local_rank"] != local:
        problems.append(f"ran as {want}, targets file says {g}")
    if mark != "two words" or nccl != "INFO":
        problems.append(f"MLAGPT_CHECK_MARK={mark!r} NCCL_DEBUG={nccl!r} arrived")
    if other != "unset":
        problems.append("CHECK_NOT_PASSED arrived")
    if last != "--monitoring.metrics_address=0.0.0.0:9400":
        problems.append(f"last argument {last!r}")
    for p in problems:
        print(f"  rank {rank}: {p}")
    seen += 0 if problems else 1
sys.exit(0 if seen == 4 == len(targets) else 1)
PY
  pass "two hosts through a stand-in ssh (empty environment): each rank's host and local rank as in the targets file, the NCCL_/MLAGPT_ variables arrive by -x and no other, the metrics address is the last argument"
else
  fail "two hosts through a stand-in ssh: exit $status; $(head -c 2000 "$work/two.err")"
fi

# --- a 2-rank mlagpt train: every target scraped while it runs, then SIGUSR1 stops it with a checkpoint
free_port_pair() {
  "$py" - <<'PY'
import random, socket
for _ in range(50):
    port = random.randrange(20000, 40000, 2)
    try:
        for p in (port, port + 1):
            with socket.socket() as s:
                s.bind(("0.0.0.0", p))
        print(port)
        break
    except OSError:
        pass
PY
}
if [ -n "$mlagpt" ]; then
  for i in $(seq 1 300); do
    echo "line $i: the quick brown fox jumps over the lazy dog while the cat sleeps, number $((i * 7 % 13))."
  done >"$work/input.txt"
  port=$(free_port_pair)
  status=0
  if "$mlagpt" prepare --input "$work/input.txt" --tokenizer char --out "$work/dataset" >"$work/prepare.log" 2>&1; then
    (cd "$work" && exec "$run" --np 2 --hosts localhost:2 --metrics-port "$port" --targets train.json -- "$mlagpt" train \
      --config "$src/launch/configs/tiny_mla.toml" --data.dir=dataset --run.out_dir=train_run --run.device=cpu \
      --run.threads=1 --run.max_steps=100000 --run.log_every=2 --schedule.warmup_steps=2 --data.batch_size=2 \
      --data.seq_len=32 --model.block_size=32 --model.n_layer=1 --model.n_embd=32 --model.n_head=2 \
      --model.kv_lora_rank=8 --model.qk_nope_head_dim=8 --model.qk_rope_head_dim=4 --model.v_head_dim=8 \
      --eval.every=0 --eval.sample_tokens=0 --checkpoint.every=0 >train.log 2>&1) &
    job=$!
    scraped=""
    for _ in $(seq 1 120); do  # at most ~60 s
      sleep 0.5
      kill -0 "$job" 2>/dev/null || break
      scraped=$("$py" - "$work/train.json" <<'PY' || true
import json, re, sys, urllib.request
answered = []
for g in json.load(open(sys.argv[1])):
    target, rank = g["targets"][0], g["labels"]["rank"]
    try:
        body = urllib.request.urlopen(f"http://{target}/metrics", timeout=2).read().decode()
    except OSError:
        sys.exit(1)
    # Its own rank among the constant labels (job, rank, dp_rank, tp_rank) of every series.
    if not re.search(rf'^mlagpt_train_loss{{[^}}]*\brank="{rank}"', body, re.M):
        sys.exit(1)
    answered.append(f"{target} (rank {rank})")
print(", ".join(answered))
PY
      )
      [ -z "$scraped" ] || break
    done
    kill -USR1 "$job" 2>/dev/null || true
    wait "$job" || status=$?
    if [ -n "$scraped" ] && [ "$status" -eq 138 ] && [ -f "$work/train_run/checkpoints/latest" ]; then
      pass "2-rank mlagpt train: scraped mlagpt_train_loss of each target of the targets file, $scraped; SIGUSR1 to mlagpt-run's process (mpirun) stopped it with exit 138 and a checkpoint"
    else
      fail "2-rank mlagpt train: scraped '$scraped', exit $status (wanted 138), checkpoint $(cat "$work/train_run/checkpoints/latest" 2>/dev/null || echo none); log: $(tail -c 2000 "$work/train.log")"
    fi
  else
    fail "mlagpt prepare of the tiny corpus: $(tail -c 1000 "$work/prepare.log")"
  fi
else
  echo "not run: the 2-rank mlagpt train with scraping (no MLAGPT_EXECUTABLE given)"
fi

# --- launch/slurm/train.sbatch with stand-ins for srun and scontrol
sbatch_file=$src/launch/slurm/train.sbatch
directives=$(grep '^#SBATCH' "$sbatch_file")
ok=true
for want in --signal=USR1@120 --requeue --open-mode=append --ntasks-per-node= --gpus-per-node= --cpus-per-task=; do
  grep -q -- "^#SBATCH $want" <<<"$directives" || { fail "train.sbatch: no '#SBATCH $want'"; ok=false; }
done
tasks=$(sed -n 's/^#SBATCH --ntasks-per-node=//p' <<<"$directives")
gpus=$(sed -n 's/^#SBATCH --gpus-per-node=//p' <<<"$directives")
[ "$tasks" = "$gpus" ] || { fail "train.sbatch: $tasks tasks per node for $gpus GPUs"; ok=false; }
if awk '/^#SBATCH/ {if (code) exit 1} /^[^#]/ && NF {code = 1}' "$sbatch_file"; then :; else
  fail "train.sbatch: an #SBATCH line after the first command (sbatch ignores it)"
  ok=false
fi
mkdir -p "$work/slurm/bin"
# shellcheck disable=SC2016  # the stand-ins' own expansions
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >>"%s/srun.args"\nwhile [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n' \
  "$work/slurm" >"$work/slurm/bin/srun"
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >>"%s/scontrol.args"\n' "$work/slurm" >"$work/slurm/bin/scontrol"
# shellcheck disable=SC2016
printf '#!/bin/sh\nprintf "%%s\\n" "$*" >>"%s/mlagpt.args"\nexit "$FAKE_STATUS"\n' "$work/slurm" >"$work/slurm/mlagpt"
chmod +x "$work/slurm/bin/srun" "$work/slurm/bin/scontrol" "$work/slurm/mlagpt"
for exit_status in 0 138 143 1; do
  rm -f "$work/slurm/"*.args
  status=0
  (cd "$work/slurm" && PATH="$work/slurm/bin:$PATH" FAKE_STATUS=$exit_status MLAGPT_BIN="$work/slurm/mlagpt" \
    SLURM_JOB_ID=4242 SLURM_NTASKS=16 SLURM_JOB_NODELIST='gpu[01-02]' SLURM_CPUS_PER_TASK=16 \
    bash "$sbatch_file" cfg.toml --optim.lr=1e-4 >out.log 2>&1) || status=$?
  requeued=$(cat "$work/slurm/scontrol.args" 2>/dev/null || true)
  [ "$status" -eq "$exit_status" ] || { fail "train.sbatch: exit $status after a train exit $exit_status"; ok=false; }
  if [ "$exit_status" -eq 138 ]; then
    [ "$requeued" = "requeue 4242" ] || { fail "train.sbatch: after exit 138, scontrol got '$requeued'"; ok=false; }
  else
    [ -z "$requeued" ] || { fail "train.sbatch: after exit $exit_status, scontrol got '$requeued'"; ok=false; }
  fi
done
srun_args=$(cat "$work/slurm/srun.args")
train_args=$(cat "$work/slurm/mlagpt.args")
[[ " $srun_args " == *" --mpi=pmix --cpus-per-task=16 "* ]] || { fail "train.sbatch: srun $srun_args"; ok=false; }
[ "$train_args" = "train --config cfg.toml --resume auto --run.threads=16 --optim.lr=1e-4" ] ||
  { fail "train.sbatch: mlagpt got '$train_args'"; ok=false; }
$ok && pass "train.sbatch: #SBATCH --signal=USR1@120 --requeue, a task per GPU; srun --mpi=pmix starts '$train_args'; requeued after exit 138 only, its exit status kept"

# --- deploy/k8s/mpijob.yaml
if "$py" -c 'from yaml import safe_load_all' 2>/dev/null; then
  if "$py" - "$src/deploy/k8s/mpijob.yaml" "$work/k8s_train_args" <<'PY'; then
import sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
problems = []
def need(condition, what):
    if not condition:
        problems.append(what)
jobs = [d for d in docs if d.get("kind") == "MPIJob"]
need(len(jobs) == 1, "one MPIJob document")
job = jobs[0]
spec = job["spec"]
need(job.get("apiVersion") == "kubeflow.org/v2beta1", "apiVersion kubeflow.org/v2beta1")
need(spec.get("mpiImplementation") == "OpenMPI", "mpiImplementation OpenMPI")
slots = spec.get("slotsPerWorker")
need(isinstance(slots, int) and slots >= 1, "slotsPerWorker a positive integer")
replicas = spec["mpiReplicaSpecs"]
need(set(replicas) == {"Launcher", "Worker"}, "Launcher and Worker replica specs")
launcher, worker = replicas["Launcher"], replicas["Worker"]
need(launcher.get("replicas") == 1, "one launcher")
workers = worker.get("replicas")
need(isinstance(workers, int) and workers >= 1, "Worker replicas a positive integer")
lc = launcher["template"]["spec"]["containers"][0]
wc = worker["template"]["spec"]["containers"][0]
need(lc.get("image") and lc["image"] == wc.get("image") and "mlagpt" in lc["image"], "one mlagpt image for both")
command = lc.get("command", []) + lc.get("args", [])
need(command[:1] == ["mpirun"], "the launcher runs mpirun")
need(command[command.index("-np") + 1] == str(slots * workers) if "-np" in command else False,
     f"mpirun -np slotsPerWorker x workers = {slots * workers}")
passed = [command[i + 1] for i, w in enumerate(command[:-1]) if w == "-x"]
env = [e["name"] for e in lc.get("env", [])]
need(all(name in passed for name in env if name.startswith(("NCCL_", "MLAGPT_"))), "-x for each NCCL_/MLAGPT_ variable set")
need(passed and all(name in env for name in passed), "each -x variable set in the launcher's env")
train = command.index("train") if "train" in command else -1
need(train > 0 and command[train - 1].endswith("/mlagpt"), "mpirun starts mlagpt train")
program = command[train:]
need("--resume" in program and program[program.index("--resume") + 1] == "auto", "train --resume auto")
address = [a.split("=", 1)[1] for a in program if a.startswith("--monitoring.metrics_address=")]
need(len(address) == 1 and address[0].startswith("0.0.0.0:"), "one --monitoring.metrics_address=0.0.0.0:P")
port = int(address[0].rsplit(":", 1)[1]) if address else 0
limits = wc.get("resources", {}).get("limits", {})
need(limits.get("nvidia.com/gpu") == slots, "nvidia.com/gpu limit of a worker = slotsPerWorker")
need("nvidia.com/gpu" not in lc.get("resources", {}).get("limits", {}), "no GPU for the launcher")
ports = {p["containerPort"]: p.get("name", "") for p in wc.get("ports", [])}
need(all(ports.get(port + k, "").startswith("metrics") for k in range(slots)), f"worker ports {port}..{port + slots - 1} named metrics-*")
annotations = worker["template"].get("metadata", {}).get("annotations", {})
need(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(port),
     "prometheus.io scrape annotations on the workers' port")
claims = {d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"}
volumes = worker["template"]["spec"].get("volumes", [])
mounted = {m["name"]: m["mountPath"] for m in wc.get("volumeMounts", [])}
shared = [v for v in volumes if v.get("persistentVolumeClaim", {}).get("claimName") in claims and v["name"] in mounted]
need(shared, "the workers mount a PersistentVolumeClaim of this file")
if shared:
    root = mounted[shared[0]["name"]]
    for key in ("--data.dir=", "--run.out_dir="):
        need(any(a.startswith(key + root) for a in program), f"{key} on the shared volume {root}")
need(any(v.get("emptyDir", {}).get("medium") == "Memory" and mounted.get(v["name"]) == "/dev/shm" for v in volumes),
     "a memory /dev/shm on the workers")
for p in problems:
    print("  mpijob.yaml: not " + p)
with open(sys.argv[2], "w") as out:
    out.write("\n".join(program[1:]) + "\n")
sys.exit(1 if problems else 0)
PY
    pass "deploy/k8s/mpijob.yaml (PyYAML): kubeflow.org/v2beta1 MPIJob, OpenMPI, slotsPerWorker = each worker's GPUs, mpirun -np = slots x workers, -x for its NCCL_ variables, mlagpt train --resume auto on the PVC, metrics ports and scrape annotations"
    if [ -n "$mlagpt" ]; then
      # Its train arguments through mlagpt's config validation, here: the image's paths mapped to this tree, a CPU,
      # and a dataset that is not there, where a valid command line stops.
      mapfile -t k8s_args < <(sed "s#^/opt/mlagpt/#$src/#" "$work/k8s_train_args")
      status=0
      output=$("$mlagpt" train "${k8s_args[@]}" --run.device=cpu --data.dir="$work/no-dataset" \
        --run.out_dir="$work/k8s_run" --monitoring.metrics_address=127.0.0.1:0 2>&1) || status=$?
      if [ "$status" -ne 0 ] && [[ $output == *"$work/no-dataset/dataset.json"* ]]; then
        pass "the MPIJob's train arguments pass mlagpt's config validation (it stops at the missing dataset)"
      else
        fail "the MPIJob's train arguments: exit $status: $output"
      fi
    fi
  else
    fail "deploy/k8s/mpijob.yaml (above)"
  fi
else
  echo "$py has no yaml module (Debian's python3-yaml; deploy/setup.sh installs it): mpijob.yaml was not checked"
  missing+=(python3-yaml)
fi

# --- deploy/Dockerfile: structure, not a lint
if "$py" - "$src/deploy/Dockerfile" "$work/runtime_packages" <<'PY'; then
import re, sys

lines, current = [], ""
for raw in open(sys.argv[1]):
    if raw.lstrip().startswith("#") and not current:
        continue
    current += raw.rstrip("\n")
    if current.endswith("\\"):
        current = current[:-1] + " "
        continue
    if current.strip():
        lines.append(current.strip())
    current = ""
instructions = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
stages = []
for op, rest in instructions:
    if op == "FROM":
        stages.append([])
    elif stages:
        stages[-1].append((op, rest))
problems = []
def need(condition, what):
    if not condition:
        problems.append(what)
need(instructions and instructions[0][0] in ("FROM", "ARG"), "the first instruction FROM")
froms = [rest for op, rest in instructions if op == "FROM"]
need(len(froms) >= 1 and all(re.match(r"(debian:12|nvidia/cuda:13)", f) for f in froms), "every stage from debian:12 (or nvidia/cuda:13)")
build = " ".join(rest for op, rest in stages[0]) if stages else ""
need("cuda-toolkit-13-0" in build or froms[0].startswith("nvidia/cuda:13"), "CUDA 13 in the build stage")
need(re.search(r"RUN .*deploy/setup\.sh", " ".join(f"{op} {rest}" for op, rest in stages[0])), "a RUN of deploy/setup.sh")
need("cmake --preset gpu" in build and "cmake --build --preset gpu" in build, "cmake --preset gpu and its build")
final = stages[-1] if stages else []
need(any(op == "COPY" and "--from=" in rest and rest.split()[1].endswith("/trainer/mlagpt") for op, rest in final),
     "the final stage copies the mlagpt executable from the build stage")
need(any(op == "COPY" and "--from=" in rest and "/.venv" in rest for op, rest in final), "the final stage copies the venv")
need(any(op == "ENV" and "NVIDIA_DRIVER_CAPABILITIES" in rest for op, rest in final), "NVIDIA_DRIVER_CAPABILITIES set")
installs = [re.search(r"apt-get install (.*?)(&&|$)", rest) for op, rest in final if op == "RUN"]
packages = [w for m in installs if m for w in m.group(1).split() if not w.startswith("-")]
need("openmpi-bin" in packages and "openssh-server" in packages, "openmpi-bin and openssh-server in the final stage")
for p in problems:
    print("  Dockerfile: not " + p)
open(sys.argv[2], "w").write("\n".join(packages) + "\n")
sys.exit(1 if problems else 0)
PY
  pass "deploy/Dockerfile structure (not a lint): debian:12 stages, CUDA 13 toolkit, deploy/setup.sh, cmake --preset gpu, the executable and the venv copied into a slim final stage with mpirun and sshd"
else
  fail "deploy/Dockerfile structure (above)"
fi
if [ -n "$mlagpt" ] && command -v dpkg >/dev/null 2>&1; then
  # Each library the executable names (NEEDED) must come from a package the final stage installs (or the base
  # image's libc and libstdc++; libmpi through openmpi-bin), from torch/lib (its RUNPATH), or from the wheel's CUDA
  # directories that the Dockerfile gives the dynamic linker.
  torch_lib=$(readelf -d "$mlagpt" | sed -n 's/.*R\(UN\)\{0,1\}PATH.*\[\(.*\)\]/\2/p' | tr ':' '\n' | grep '/torch/lib$' | head -n 1 || true)
  site=${torch_lib%/torch/lib}
  allowed=" $(tr '\n' ' ' <"$work/runtime_packages") libc6 libstdc++6 libgcc-s1 libopenmpi3 "
  uncovered=()
  while read -r soname path; do
    real=$(readlink -f "$path")
    package=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true)
    package=${package%%:*}
    if [ -n "$package" ]; then
      [[ $allowed == *" $package "* ]] || uncovered+=("$soname ($package)")
    elif [ -n "$site" ] && [ -e "$torch_lib/$soname" ]; then
      :
    elif [ -n "$site" ] && { [ -e "$site/nvidia/cu13/lib/$soname" ] || [ -e "$site/nvidia/nccl/lib/$soname" ]; }; then
      :
    else
      uncovered+=("$soname ($path)")
    fi
  done < <(ldd "$mlagpt" | awk 'NR == FNR {needed[$1] = 1; next} ($1 in needed) && $3 ~ /^\// {print $1, $3}' \
    <(readelf -d "$mlagpt" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') -)
  if [ -z "$site" ]; then
    fail "the executable's RUNPATH names no torch/lib"
  elif [ ${#uncovered[@]} -eq 0 ]; then
    pass "the Dockerfile's runtime packages and the wheel's nvidia/cu13 and nvidia/nccl libraries cover the executable's direct library dependencies"
  else
    fail "not covered in the Dockerfile's final stage: ${uncovered[*]}"
  fi
fi

echo "not run here: sbatch/srun (no SLURM), kubectl (no cluster), docker build (no Docker engine), a GPU"
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (deploy/setup.sh installs them)"
  [ "${CI:-}" = true ] && { echo "CI=true: a missing prerequisite fails"; exit 1; }
  exit 77
fi
echo "all launch and deploy checks passed"
