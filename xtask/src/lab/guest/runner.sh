#!/bin/sh
# Serves the host on the serial port /etc/lab-runner-port names (x86 ttyS1, arm64 the PCI
# 16550's ttyS0; protocol in xtask/src/lab/machine.rs): reads
# `@@CMD ID CRC LEN BASE64` lines, checks LEN against the base64 text and CRC (busybox
# `crc32`, 8 hex digits) against the decoded command, acknowledges it (`@@ACK ID CRC LEN`) or says what it got (`@@NAK ...`) and waits
# for the next line; runs an acknowledged command once (a re-sent ID gets the same answer
# again) and answers `@@BEGIN ID`, the output in base64, `@@END ID EXIT-CODE`.
# Not PID 1 (see init.sh): orphans' SIGCHLD would reach it inside `read`, and busybox ash
# restarts an interrupted `read` with the bytes it had read so far thrown away.
port=${LAB_PORT:-$(cat /etc/lab-runner-port)}
console=${LAB_CONSOLE:-/dev/console}
tmp=${LAB_TMP:-/tmp}
[ -c "$port" ] && stty -F "$port" raw -echo
role=guest
[ -e /proc/vmcore ] && role=capture
exec 3<>"$port"
echo "@@READY $role $(uname -r)" >&3
last=
while :; do
	line=
	IFS= read -r line <&3 || [ -n "$line" ] || { sleep 0.1; continue; }
	set -f
	# shellcheck disable=SC2086 # split on purpose, globbing off
	set -- $line
	set +f
	if [ "$#" -ne 5 ] || [ "$1" != "@@CMD" ]; then
		echo "lab-runner: garbled line (${#line} bytes): $line" >"$console"
		echo "@@NAK ? ${#line}" >&3
		continue
	fi
	id=$2 want="$3 $4"
	if [ "$id" != "$last" ]; then
		got="? ${#5}"
		[ "${#5}" = "$4" ] && got="$(printf %s "$5" | base64 -d 2>/dev/null | tee $tmp/.lab-cmd | crc32) $4"
		if [ "$got" != "$want" ]; then
			echo "lab-runner: $id: checksum $got, expected $want: asking again" >"$console"
			echo "@@NAK $id $got" >&3
			continue
		fi
	fi
	echo "@@ACK $id $want" >&3
	if [ "$id" != "$last" ]; then
		# On the console too, so a post-mortem's last lines show what the guest was doing.
		echo "lab-runner: $id: $(cat $tmp/.lab-cmd)" >"$console"
		sh $tmp/.lab-cmd >$tmp/.lab-out 2>&1 </dev/null 3>&-
		rc=$?
		last=$id
	fi
	{
		echo "@@BEGIN $id"
		base64 $tmp/.lab-out
		echo "@@END $id $rc"
	} >&3
done
