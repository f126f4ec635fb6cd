#!/bin/sh
# Loads the virtio-mem driver and its dependencies from /lib/modules/virtio-mem (image.rs
# GUEST_VIRTIO_MEM_MODULES) in the order its `order` file lists, then waits until the driver
# has bound the guest's virtio-mem-pci device. Any failure names what failed.
dir=/lib/modules/virtio-mem
for m in $(cat "$dir/order"); do
	insmod "$dir/$m.ko" || { echo "lab-virtio-mem-up: insmod $dir/$m.ko failed (module $m)"; exit 1; }
done
i=0
until ls /sys/bus/virtio/drivers/virtio_mem/ 2>/dev/null | grep -q '^virtio'; do
	i=$((i + 1))
	[ "$i" -le 50 ] || { echo "lab-virtio-mem-up: virtio_mem bound no device 5 s after loading $(cat "$dir/order")"; exit 1; }
	sleep 0.1
done
