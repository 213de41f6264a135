#!/bin/bash
# Runs in a guest with three scratch disks: dm-thin, btrfs, zfs and overlay must load and work.
# Prints "OK <facility>" per facility; any failure exits non-zero with the failing command.
set -euo pipefail
read -r d0 d1 d2 <<<"$COWLAB_DISKS"
[ -b "$d0" ] && [ -b "$d1" ] && [ -b "$d2" ] || { echo "expected three scratch disks, got '$COWLAB_DISKS'"; exit 2; }

# dm-thin: pool on d0 (metadata + data linear pieces), a thin volume, a snapshot that diverges.
modprobe dm-thin-pool
sz=$(blockdev --getsz "$d0")
dmsetup create tmeta --table "0 131072 linear $d0 0"
dmsetup create tdata --table "0 $((sz - 131072)) linear $d0 131072"
dd if=/dev/zero of=/dev/mapper/tmeta bs=4096 count=1 status=none
dmsetup create pool --table "0 $((sz - 131072)) thin-pool /dev/mapper/tmeta /dev/mapper/tdata 128 0"
dmsetup message pool 0 "create_thin 0"
dmsetup create thin0 --table "0 2097152 thin /dev/mapper/pool 0"
mkfs.ext4 -q /dev/mapper/thin0
mkdir -p /mnt/thin0 /mnt/snap1
mount /dev/mapper/thin0 /mnt/thin0
echo origin > /mnt/thin0/f; sync
dmsetup suspend thin0; dmsetup message pool 0 "create_snap 1 0"; dmsetup resume thin0
echo changed > /mnt/thin0/f; sync
dmsetup create snap1 --table "0 2097152 thin /dev/mapper/pool 1"
mount -o ro,noload /dev/mapper/snap1 /mnt/snap1
[ "$(cat /mnt/snap1/f)" = origin ] && [ "$(cat /mnt/thin0/f)" = changed ]
dmsetup status pool | grep -q thin-pool
echo "OK dm-thin $(dmsetup status pool | cut -d' ' -f3-6)"

# btrfs: a subvolume, a snapshot, divergence.
modprobe btrfs
mkfs.btrfs -q -f "$d1"
mkdir -p /mnt/b && mount "$d1" /mnt/b
btrfs -q subvolume create /mnt/b/vol
echo one > /mnt/b/vol/f
btrfs -q subvolume snapshot /mnt/b/vol /mnt/b/snap
echo two > /mnt/b/vol/f
[ "$(cat /mnt/b/snap/f)" = one ] && [ "$(cat /mnt/b/vol/f)" = two ]
echo "OK btrfs $(btrfs subvolume list /mnt/b | wc -l) subvolumes"

# zfs: a pool on a partition (no udev needed), a dataset, a snapshot, a clone.
modprobe zfs
echo ',,' | sfdisk -q --label gpt "$d2"
part=$(lsblk -lnpo NAME "$d2" | sed -n 2p)
zpool create -f -o cachefile=none -O mountpoint=/tank tank "$part"
zfs create tank/fs
echo base > /tank/fs/f
zfs snapshot tank/fs@s1
zfs clone tank/fs@s1 tank/clone
echo modified > /tank/fs/f
[ "$(cat /tank/clone/f)" = base ] && [ "$(cat /tank/fs/f)" = modified ]
[ "$(zfs get -H -o value origin tank/clone)" = tank/fs@s1 ]
echo "OK zfs module $(cat /sys/module/zfs/version)"
zpool destroy tank

# overlay: lower + upper on tmpfs-backed dirs of the ext4 root, copy-up and a whiteout.
modprobe overlay
mkdir -p /mnt/o/{lower,upper,work,merged}
echo low > /mnt/o/lower/a; echo gone > /mnt/o/lower/b
mount -t overlay overlay -o lowerdir=/mnt/o/lower,upperdir=/mnt/o/upper,workdir=/mnt/o/work /mnt/o/merged
echo up >> /mnt/o/merged/a; rm /mnt/o/merged/b
[ "$(cat /mnt/o/lower/a)" = low ] && [ -f /mnt/o/upper/a ] && [ -c /mnt/o/upper/b ]
echo "OK overlay"
