#!/bin/sh
# Serves the host on ttyS1 (protocol in xtask/src/lab/machine.rs): reads `ID COMMAND` lines,
# answers `@@BEGIN ID`, the output in base64, `@@END ID EXIT-CODE`.
port=/dev/ttyS1
stty -F "$port" raw -echo
role=guest
[ -e /proc/vmcore ] && role=capture
exec 3<>"$port"
echo "@@READY $role $(uname -r)" >&3
while read -r id cmd <&3; do
	# On the console too, so a post-mortem's last lines show what the guest was doing.
	echo "lab-runner: $id: $cmd" >/dev/console
	sh -c "$cmd" >/tmp/.lab-out 2>&1 </dev/null
	rc=$?
	{
		echo "@@BEGIN $id"
		base64 /tmp/.lab-out
		echo "@@END $id $rc"
	} >&3
done
