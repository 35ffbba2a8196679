#!/usr/bin/env bash
# Builds the Linux test-guest kit that plays the client in Strata's
# vhost-user-blk tests: a Debian kernel, uncompressed so QEMU can boot it
# through its PVH note, and a busybox initramfs whose /init loads the virtio
# modules and runs the test routine named on the kernel command line
# (see guest-init.sh next to this script).
#
#   tests/linux/build-guest.sh [--refresh] OUTDIR
#
# OUTDIR ends up holding vmlinux, initramfs.cpio.gz and kit.stamp. The stamp
# names the package versions and the hash of this script and of the init; when
# the hashes match, the script exits at once (with --refresh, only if apt
# offers no newer kernel or busybox either). Everything comes from the Debian
# mirrors through apt; missing tools are installed with apt-get (needs root).
set -euo pipefail

die() { echo "build-guest.sh: $*" >&2; exit 1; }

refresh=0
if [[ ${1:-} == --refresh ]]; then
    refresh=1
    shift
fi
[[ $# -eq 1 ]] || die "usage: build-guest.sh [--refresh] OUTDIR"
outdir=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_src=$here/guest-init.sh
[[ -f $init_src ]] || die "missing $init_src"

command -v apt-get >/dev/null || die "apt-get not found: the guest kit is built from Debian packages"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found: the guest kit is built from Debian packages"

# The modules /init loads, by name; their dependencies are added from each
# module's .modinfo, so a kernel that splits them differently still works.
wanted_modules=(virtio_pci virtio_mmio virtio_blk)

# --- what should be in the kit -------------------------------------------

apt_updated=0
apt_update() {
    if ((apt_updated == 0)); then
        echo "build-guest.sh: apt-get update" >&2
        as_root apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# The versioned kernel package behind the linux-image-amd64 metapackage.
resolve_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

candidate_version() {
    apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)' | head -n1
}

script_hash=$(cat "${BASH_SOURCE[0]}" "$init_src" | sha256sum | cut -d' ' -f1)

stamp=$outdir/kit.stamp
kit_complete() {
    [[ -s $outdir/vmlinux && -s $outdir/initramfs.cpio.gz && -f $stamp ]]
}

# Fast path: a kit built by this same script is kept, so a test run never
# switches kernels halfway. --refresh rebuilds it when apt now offers newer
# packages than the stamp names (asking apt costs about two seconds).
if kit_complete && grep -qx "script $script_hash" "$stamp"; then
    if ((refresh == 0)); then
        exit 0
    fi
    kernel_pkg=$(resolve_kernel_pkg || true)
    if [[ -z $kernel_pkg ]] ||
        { grep -qx "kernel $kernel_pkg $(candidate_version "$kernel_pkg")" "$stamp" &&
            grep -qx "busybox busybox-static $(candidate_version busybox-static)" "$stamp"; }; then
        exit 0
    fi
fi

kernel_pkg=${kernel_pkg:-$(resolve_kernel_pkg || true)}
if [[ -z $kernel_pkg ]]; then
    apt_update
    kernel_pkg=$(resolve_kernel_pkg) || true
    [[ -n $kernel_pkg ]] || die "cannot resolve linux-image-amd64 to a kernel package"
fi

# --- tools ----------------------------------------------------------------

need_pkgs=()
command -v readelf >/dev/null && command -v objcopy >/dev/null || need_pkgs+=(binutils)
command -v gzip >/dev/null || need_pkgs+=(gzip)
command -v od >/dev/null || need_pkgs+=(coreutils)
if ((${#need_pkgs[@]})); then
    echo "build-guest.sh: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null 2>&1 ||
        { apt_update; as_root apt-get install -y -qq "${need_pkgs[@]}" >/dev/null; } ||
        die "cannot install ${need_pkgs[*]}"
fi

# Installs the package holding a decompressor on first use.
need_tool() { # tool package
    command -v "$1" >/dev/null && return 0
    echo "build-guest.sh: installing $2" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq "$2" >/dev/null 2>&1 ||
        { apt_update; as_root apt-get install -y -qq "$2" >/dev/null; } ||
        die "cannot install $2 (for $1)"
}

# --- download and unpack --------------------------------------------------

mkdir -p "$outdir"
work=$(mktemp -d "$outdir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

download() {
    # apt drops privileges to _apt for downloads; the private temp dir is not
    # readable by it, so keep root when running as root.
    (cd "$work" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" "$@" >/dev/null 2>&1)
}
if ! download "$kernel_pkg" busybox-static; then
    apt_update
    download "$kernel_pkg" busybox-static || die "apt-get download $kernel_pkg busybox-static failed"
fi
kernel_deb=$(ls "$work"/"$kernel_pkg"_*.deb)
busybox_deb=$(ls "$work"/busybox-static_*.deb)
kernel_ver=$(dpkg-deb -f "$kernel_deb" Version)
busybox_ver=$(dpkg-deb -f "$busybox_deb" Version)

echo "build-guest.sh: unpacking $kernel_pkg $kernel_ver and busybox-static $busybox_ver" >&2
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"
rm -f "$kernel_deb" "$busybox_deb"

vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-* 2>/dev/null | head -n1)
[[ -n $vmlinuz ]] || die "$kernel_pkg has no /boot/vmlinuz-*"
moddir=$(ls -d "$work"/kernel/lib/modules/*/ 2>/dev/null | head -n1)
[[ -n $moddir ]] || die "$kernel_pkg has no /lib/modules/<release>/"

# --- vmlinux out of the bzImage -----------------------------------------
#
# The boot-protocol header says where the compressed kernel sits:
#   0x1f1  setup_sects     (u8)   setup code is (setup_sects + 1) * 512 bytes
#   0x248  payload_offset  (u32)  from the end of the setup code
#   0x24c  payload_length  (u32)  compressed stream + 4-byte uncompressed size
# so there is no need to scan for magic numbers.

le() { od -An -t"u$2" -j "$3" -N "$2" "$1" | tr -d ' '; } # file width offset

# bytes FILE OFFSET LENGTH: a slice of a file on stdout.
bytes() { dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }

[[ $(bytes "$vmlinuz" $((0x202)) 4) == HdrS ]] ||
    die "$vmlinuz is not a bzImage (no HdrS header)"
setup_sects=$(le "$vmlinuz" 1 $((0x1f1)))
payload_offset=$(le "$vmlinuz" 4 $((0x248)))
payload_length=$(le "$vmlinuz" 4 $((0x24c)))
start=$(((setup_sects + 1) * 512 + payload_offset))
expected_size=$(le "$vmlinuz" 4 $((start + payload_length - 4)))
bytes "$vmlinuz" "$start" $((payload_length - 4)) >"$work/payload.stream"

magic=$(od -An -tx1 -N6 "$work/payload.stream" | tr -d ' \n')
case $magic in
fd377a585a00*) need_tool xz xz-utils; xz -dc <"$work/payload.stream" >"$work/vmlinux" ;;
28b52ffd*) need_tool zstd zstd; zstd -qdc <"$work/payload.stream" >"$work/vmlinux" ;;
1f8b*) gzip -dc <"$work/payload.stream" >"$work/vmlinux" ;;
*) die "unknown kernel compression (payload starts with $magic)" ;;
esac
rm -f "$work/payload.stream"

[[ $(stat -c %s "$work/vmlinux") -eq $expected_size ]] ||
    die "decompressed vmlinux is $(stat -c %s "$work/vmlinux") bytes, header says $expected_size"
[[ $(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] ||
    die "decompressed kernel is not an ELF file"
# Xen ELF note type 18 (XEN_ELFNOTE_PHYS32_ENTRY) is the PVH entry point.
readelf -n "$work/vmlinux" | grep -q 'Unknown note type: (0x00000012)' ||
    die "vmlinux has no PVH entry note (Xen note 0x12); QEMU cannot boot it with -kernel"

# --- modules ----------------------------------------------------------------

modinfo_field() { # file field
    objcopy -O binary --only-section=.modinfo "$1" /dev/stdout 2>/dev/null |
        tr '\0' '\n' | sed -n "s/^$2=//p"
}

find_module() { # name: path of its .ko file, plain or compressed
    find "$moddir/kernel" \( -name "$1.ko*" -o -name "${1//_/-}.ko*" \) -print -quit
}

# Depth-first, dependencies before dependants.
declare -A placed=() module_path=()
load_order=()
place_module() {
    local name=${1//-/_} dep
    [[ -n ${placed[$name]:-} ]] && return 0
    placed[$name]=1
    local ko
    ko=$(find_module "$name")
    if [[ -z $ko ]]; then
        grep -q "/$name.ko" "$moddir/modules.builtin" 2>/dev/null && return 0
        die "module $name is neither built in nor shipped in $kernel_pkg"
    fi
    ko=$(plain_module "$ko")
    module_path[$name]=$ko
    local deps
    deps=$(modinfo_field "$ko" depends)
    for dep in ${deps//,/ }; do
        place_module "$dep"
    done
    load_order+=("$name")
}

# busybox insmod may not read compressed modules; store them plain.
plain_module() {
    case $1 in
    *.ko) echo "$1" ;;
    *.ko.xz) need_tool xz xz-utils; xz -dc "$1" >"${1%.xz}" && echo "${1%.xz}" ;;
    *.ko.zst) need_tool zstd zstd; zstd -qdc "$1" >"${1%.zst}" && echo "${1%.zst}" ;;
    *.ko.gz) gzip -dc "$1" >"${1%.gz}" && echo "${1%.gz}" ;;
    *) die "unknown module file $1" ;;
    esac
}

for m in "${wanted_modules[@]}"; do
    place_module "$m"
done

# --- initramfs ---------------------------------------------------------------

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
"$root/bin/busybox" --list >/dev/null 2>&1 || die "busybox-static does not run on this machine"
for applet in sh; do
    ln -s busybox "$root/bin/$applet"
done
for name in "${load_order[@]}"; do
    cp "${module_path[$name]}" "$root/lib/modules/$name.ko"
done
printf '%s\n' "${load_order[@]}" >"$root/lib/modules/load-order"
install -m 0755 "$init_src" "$root/init"

if command -v cpio >/dev/null; then
    cpio_cmd=(cpio --quiet -o -H newc -R 0:0)
else
    # busybox-static's own cpio applet saves installing cpio.
    cpio_cmd=("$work/busybox/bin/busybox" cpio -o -H newc -R 0:0)
fi
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | "${cpio_cmd[@]}") | gzip -9n >"$work/initramfs.cpio.gz" ||
    die "building the initramfs failed"

# --- install: files first, stamp last ------------------------------------

mv -f "$work/vmlinux" "$outdir/vmlinux"
mv -f "$work/initramfs.cpio.gz" "$outdir/initramfs.cpio.gz"
{
    echo "script $script_hash"
    echo "kernel $kernel_pkg $kernel_ver"
    echo "busybox busybox-static $busybox_ver"
    echo "modules ${load_order[*]}"
} >"$work/kit.stamp"
mv -f "$work/kit.stamp" "$stamp"
echo "build-guest.sh: kit ready in $outdir (modules: ${load_order[*]})" >&2
