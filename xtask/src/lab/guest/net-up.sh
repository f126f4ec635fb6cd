#!/bin/sh
# Brings up the NIC of a networked lab guest on QEMU user networking (guest 10.0.2.15/24,
# gateway 10.0.2.2): its driver and dependencies from /lib/modules/lab (image.rs GUEST_MODULES),
# in the order its `order` file lists, then eth0. Any failure names what failed.
dir=/lib/modules/lab
for m in $(cat "$dir/order"); do
	insmod "$dir/$m.ko" || { echo "lab-net-up: insmod $dir/$m.ko failed (module $m)"; exit 1; }
done
# A PCI driver probes its device while insmod runs; the wait only covers a slow probe.
i=0
until [ -e /sys/class/net/eth0 ]; do
	i=$((i + 1))
	[ "$i" -le 50 ] || { echo "lab-net-up: no eth0 5 s after loading $(cat "$dir/order")"; exit 1; }
	sleep 0.1
done
ip link set eth0 up || exit 1
ip addr add 10.0.2.15/24 dev eth0 || exit 1
ip route add default via 10.0.2.2 || exit 1
