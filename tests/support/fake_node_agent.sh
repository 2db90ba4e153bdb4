#!/usr/bin/env bash
# Open MPI launcher agent (plm_rsh_agent) that simulates extra nodes on this machine, so that tests can run a real
# multi-node job: `mpirun --host 127.0.0.2:2,127.0.0.3:2` starts one orted per "node" through this script, and
# Open MPI maps, splits (MPI_COMM_TYPE_SHARED) and connects the ranks as on two hosts.
#
# How Open MPI calls it: like ssh, with argv `[ssh options] HOST COMMAND...`, where COMMAND is a shell command
# line split into words, some with shell quoting left in (` orted -mca ess "env" ... --tree-spawn ...`). Open MPI
# adds `-x` itself when the agent's file name is `ssh`, and puts --mca plm_rsh_args words before HOST. This script
# skips the options, runs COMMAND with `sh -c "$*"` (as sshd would) and never touches the network.
#
# Each node gets its own UTS namespace with hostname HOST, so gethostname() and MPI_Get_processor_name() in its
# ranks return HOST. Modes, in order of preference (MLAGPT_FAKE_NODE_MODE forces one):
#   uts              `unshare --uts`, needs root or CAP_SYS_ADMIN.
#   userns           `unshare --user --map-root-user --uts`, for users allowed unprivileged user namespaces.
#   shared-hostname  no namespace: ranks see the real hostname, but Open MPI still sees separate nodes as long as
#                    each node's vader (shared memory) segments live in their own directory, which this mode sets
#                    (btl_vader_backing_directory); without that, vader segment names collide and ranks crash.
# `fake_node_agent.sh --check` prints the mode it would use; a test that needs per-node hostnames should skip
# unless it prints uts or userns.
#
# Recipe (verified with Open MPI 4.1.4, Debian 12; the host names must not name this machine: 127.0.0.1 or
# localhost would be launched locally without the agent):
#   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
#          OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
#   mpirun --mca plm_rsh_agent /abs/path/tests/support/fake_node_agent.sh \
#          --mca oob_tcp_if_include lo --mca btl_tcp_if_include lo \
#          --host 127.0.0.2:2,127.0.0.3:2 -np 4 PROGRAM
# OMPI_MCA_plm_rsh_agent=... in the environment works as well as --mca. Give the agent as an absolute path (what
# was tested; an orted may call it again under tree spawn). Host names given as loopback addresses (127.0.0.2,
# 127.0.0.3) let a rank listen on its node's own address with the same port on every node; plain names (A, B) work
# too, without /etc/hosts entries, because nothing resolves them. mpirun cuts a name that is not an address at its
# first dot (node1.test becomes node1). The *_if_include lo flags keep Open MPI's TCP traffic on loopback, which
# it otherwise skips (without them it used this machine's other interface).
#
# Environment: ranks get MLAGPT_FAKE_NODE=HOST and MLAGPT_FAKE_NODE_MODE. Unlike ssh, the agent runs as a child of
# mpirun, so the ranks inherit mpirun's whole environment even without -x; MLAGPT_FAKE_NODE_CLEAN_ENV=1 starts the
# node from a login-like environment (PATH, HOME, USER, LOGNAME, SHELL, LANG, TMPDIR, LD_LIBRARY_PATH) instead, so
# that only what mpirun forwards (-x VAR, OMPI_* variables) reaches the ranks, as on real nodes.
set -euo pipefail

readonly agent_name=${0##*/}

# The mode this machine allows, or the forced one.
pick_mode() {
  if [[ -n ${MLAGPT_FAKE_NODE_MODE:-} ]]; then
    case $MLAGPT_FAKE_NODE_MODE in
    uts | userns | shared-hostname) echo "$MLAGPT_FAKE_NODE_MODE" ;;
    *)
      echo "$agent_name: MLAGPT_FAKE_NODE_MODE=$MLAGPT_FAKE_NODE_MODE is not one of uts, userns, shared-hostname" >&2
      return 1
      ;;
    esac
  elif unshare --uts true 2>/dev/null; then
    echo uts
  elif unshare --user --map-root-user --uts true 2>/dev/null; then
    echo userns
  else
    echo shared-hostname
  fi
}

if [[ ${1:-} == --check ]]; then
  pick_mode
  exit 0
fi

# ssh options before HOST: those that take a value consume the next word too.
while [[ $# -gt 0 && $1 == -* ]]; do
  case $1 in
  -[BbcDEeFIiJLlmOoPpQRSWw]) shift 2 ;;
  *) shift ;;
  esac
done
if [[ $# -lt 2 ]]; then
  echo "$agent_name: usage: $agent_name [ssh options] HOST COMMAND... (or --check)" >&2
  exit 2
fi
host=$1
shift
mode=$(pick_mode)

if [[ ${MLAGPT_FAKE_NODE_CLEAN_ENV:-0} == 1 ]]; then
  kept=()
  for name in PATH HOME USER LOGNAME SHELL LANG TMPDIR LD_LIBRARY_PATH; do
    if [[ -n ${!name:-} ]]; then
      kept+=("$name=${!name}")
    fi
  done
  exec env -i "${kept[@]}" MLAGPT_FAKE_NODE_MODE="$mode" "$0" "$host" "$@"
fi

export MLAGPT_FAKE_NODE=$host MLAGPT_FAKE_NODE_MODE=$mode
# Sets the node's hostname inside the new namespace, then runs the command line as sshd would.
# shellcheck disable=SC2016  # $1 and $* expand in the inner shell
readonly as_node='hostname "$1" && shift && exec /bin/sh -c "$*"'
case $mode in
uts) exec unshare --uts -- /bin/sh -c "$as_node" fake_node "$host" "$@" ;;
userns) exec unshare --user --map-root-user --uts -- /bin/sh -c "$as_node" fake_node "$host" "$@" ;;
shared-hostname)
  vader_dir="${TMPDIR:-/tmp}/mlagpt_fake_node.$(id -u).$host"
  mkdir -m 700 "$vader_dir" 2>/dev/null || [[ -d $vader_dir ]]
  export OMPI_MCA_btl_vader_backing_directory=$vader_dir
  exec /bin/sh -c "$*"
  ;;
esac
