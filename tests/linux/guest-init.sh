#!/bin/busybox sh
# /init of the Linux test guest (packed by build-guest.sh). It loads the
# virtio modules, waits for the virtio disks, runs the routines named by
# strata.test= on the kernel command line, prints STRATA-DONE <status> and
# powers off. Everything goes to the serial console, one record per line:
#
#   STRATA-DISKS vda vdb             the disks found, in probe order
#   SIZE <dev> <bytes>               (sums) size of each disk
#   SUM <dev> <off> <len> <sha256>   (sums) hash of a byte range
#   WROTE <off> <len> <sha256>       (write) hash of the range read back
#   READ <bytes> <ms>                (read) guest time to read strata.ranges
#   PAUSE <seconds>                  (pause) before sleeping
#   STRATA-FAIL <reason>             a routine failed
#   STRATA-DONE <status>             last line; 0 when every routine passed
#
# Command line:
#   strata.test=sums[,write,...]   routines, run in order (default sums)
#   strata.disks=N                 disks to wait for (default 1)
#   strata.ranges=OFF:LEN,...      ranges for sums and read (default the whole disk)
#   strata.dev=vda                 disk for write (default vda)
#   strata.wr=OFF:LEN              range for write (default 0:1048576)
#   strata.pattern=HH              byte for write, two hex digits (default a5)
#   strata.pause=SECONDS           how long the pause routine sleeps (default 5);
#                                  it prints "PAUSE <seconds>" first
# Offsets and lengths are in bytes. strata.test=shell starts a shell instead.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Keep kernel messages off the console while the routines print their
# records, and start on a fresh line (firmware leaves the cursor mid-line).
echo 1 >/proc/sys/kernel/printk
echo

status=0
fail() {
    echo "STRATA-FAIL $*"
    status=1
}

finish() {
    sync
    echo "STRATA-DONE $status"
    poweroff -f
    # Without ACPI poweroff, a panic plus QEMU's -no-reboot still ends the run.
    echo o >/proc/sysrq-trigger
    sleep 5
    exit "$status"
}

# The kernel keeps dotted parameters to itself (they look like module
# options), so read them from /proc/cmdline.
param() { # name default
    local word
    for word in $(cat /proc/cmdline); do
        case $word in
        "strata.$1="*) echo "${word#*=}"; return ;;
        esac
    done
    echo "$2"
}

for module in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$module.ko" || fail "insmod $module"
done

disks_wanted=$(param disks 1)
disks() { ls /sys/block 2>/dev/null | grep '^vd' | sort; }
tries=0
while [ "$(disks | wc -l)" -lt "$disks_wanted" ] && [ $tries -lt 200 ]; do
    sleep 0.05
    tries=$((tries + 1))
done
echo "STRATA-DISKS" $(disks)
[ "$(disks | wc -l)" -ge "$disks_wanted" ] || fail "wanted $disks_wanted virtio disks, found $(disks | wc -l)"

disk_bytes() { echo $(($(cat "/sys/block/$1/size") * 512)); }

# Hash LEN bytes at OFF of a disk, read through a dropped page cache.
range_sha() { # dev off len
    echo 3 >/proc/sys/vm/drop_caches
    dd if="/dev/$1" bs=1M iflag=skip_bytes,count_bytes,fullblock skip="$2" count="$3" 2>/dev/null |
        sha256sum | cut -d' ' -f1
}

run_sums() {
    local dev size ranges range off len
    for dev in $(disks); do
        size=$(disk_bytes "$dev")
        echo "SIZE $dev $size"
        ranges=$(param ranges "0:$size")
        for range in $(echo "$ranges" | tr ',' ' '); do
            off=${range%%:*}
            len=${range#*:}
            if [ $((off + len)) -gt "$size" ]; then
                fail "sums: range $off:$len is past the end of $dev ($size bytes)"
                continue
            fi
            echo "SUM $dev $off $len $(range_sha "$dev" "$off" "$len")"
        done
    done
}

# Reads the ranges of /dev/vda (strata.ranges) to /dev/null, in order, and
# prints the guest time it took: "READ <bytes> <milliseconds>".
run_read() {
    local ranges range off len start end total=0
    ranges=$(param ranges "0:$(disk_bytes vda)")
    echo 3 >/proc/sys/vm/drop_caches
    start=$(cut -d' ' -f1 /proc/uptime | tr -d .)
    for range in $(echo "$ranges" | tr ',' ' '); do
        off=${range%%:*}
        len=${range#*:}
        dd if=/dev/vda of=/dev/null bs=64k iflag=skip_bytes,count_bytes skip="$off" count="$len" 2>/dev/null ||
            fail "read: range $off:$len"
        total=$((total + len))
    done
    end=$(cut -d' ' -f1 /proc/uptime | tr -d .)
    echo "READ $total $(( (end - start) * 10 ))"
}

run_write() {
    local dev range off len pattern octal
    dev=$(param dev vda)
    range=$(param wr 0:1048576)
    pattern=$(param pattern a5)
    off=${range%%:*}
    len=${range#*:}
    [ -b "/dev/$dev" ] || { fail "write: no /dev/$dev"; return; }
    if [ $((off + len)) -gt "$(disk_bytes "$dev")" ]; then
        fail "write: range $off:$len is past the end of $dev"
        return
    fi
    octal=$(printf '%03o' "0x$pattern")
    if ! head -c "$len" /dev/zero | tr '\000' "\\$octal" |
        dd of="/dev/$dev" bs=1M iflag=fullblock oflag=seek_bytes seek="$off" conv=notrunc,fsync 2>/dev/null; then
        fail "write: dd to /dev/$dev failed"
        return
    fi
    sync
    echo "WROTE $off $len $(range_sha "$dev" "$off" "$len")"
}

for routine in $(param test sums | tr ',' ' '); do
    case $routine in
    sums) run_sums ;;
        write) run_write ;;
    read) run_read ;;
    pause) echo "PAUSE $(param pause 5)"; sleep "$(param pause 5)" ;;
    shell) setsid cttyhack sh ;;
    *) fail "unknown strata.test routine '$routine'" ;;
    esac
done
finish
