#!/bin/busybox sh
# /init of both lab images (first kernel and capture kernel): mount, then serve the host.
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
# The runner is a child, not PID 1: orphaned background processes (hooks, pollers, agents)
# are reparented to PID 1, and their exit signals must not interrupt the runner's `read` of
# a command line (busybox ash drops the bytes read so far). PID 1 reaps them and restarts a
# runner that exits (the host sees a second @@READY).
while :; do
	/bin/lab-runner
	echo "lab-init: lab-runner exited ($?), restarting it" >/dev/console
	sleep 1
done &
while :; do sleep 3600; done
