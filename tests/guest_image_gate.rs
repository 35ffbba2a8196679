//! The gate every guest image must pass, and a boot test under QEMU.
//!
//! Static checks, for each image in `IMAGE_NAMES`:
//!
//! * no instruction touches SSE/AVX state (`xmm`/`ymm`/`zmm` registers,
//!   `mxcsr`, `fxsave`, `vzeroupper`, ...): the nested KVM the tests run on
//!   does not emulate them and the guest would die;
//! * the ELF is what linux-loader and QEMU accept as a PVH kernel: ELF64,
//!   x86-64, `PT_LOAD` segments at or above 1 MiB with `p_paddr == p_vaddr`,
//!   and a `PT_NOTE` holding the `Xen` note of type `XEN_ELFNOTE_PHYS32_ENTRY`
//!   pointing into executable code;
//! * the file is small (every page a guest touches costs time).
//!
//! Boot checks run the images under `qemu-system-x86_64` with TCG, on the
//! `pc` machine (SeaBIOS and its PVH option ROM) and on `microvm` (qboot).
//! They fail, rather than skip, when QEMU or objdump is missing.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use strata_guest_abi::pvh::XEN_ELFNOTE_PHYS32_ENTRY;
use strata_guest_abi::qemu_exit_status;
use strata_guest_images::{IMAGE_NAMES, image_path};

/// Upper bound on an image's file size.
const MAX_IMAGE_SIZE: u64 = 64 * 1024;
/// Where linux-loader's high memory (and the guests' load address) starts.
const HIGH_MEMORY_START: u64 = 0x10_0000;
/// The guests identity-map the first 4 GiB at boot, the last of them
/// uncached (the device hole): images must end below 3 GiB.
const IMAGE_END_LIMIT: u64 = 3 << 30;

const QEMU: &str = "qemu-system-x86_64";
const QEMU_TIMEOUT: Duration = Duration::from_secs(60);
const SETUP_HINT: &str = "the guest image tests need it; run the repository's setup script \
                          (under scripts/) to install QEMU and binutils";

/// Words that must not appear in any disassembled instruction.
const FORBIDDEN: &[&str] = &[
    "xmm",
    "ymm",
    "zmm",
    "mxcsr", // also ldmxcsr, stmxcsr, vldmxcsr, vstmxcsr
    "fxsave",
    "fxrstor",
    "xsave",
    "xrstor",
    "vzeroupper",
    "vzeroall",
];

// ---------------------------------------------------------------------------
// No SSE/AVX

/// Returns the instruction text of an `objdump -d` line, if it is one.
fn instruction_text(line: &str) -> Option<&str> {
    // Instruction lines look like "  100000:\tfa   \tcli" (address, raw
    // bytes, instruction); symbol and section lines do not start with blanks.
    if !line.starts_with(' ') {
        return None;
    }
    let (_, rest) = line.split_once(":\t")?;
    Some(rest.rsplit('\t').next().unwrap_or(rest))
}

fn is_forbidden(instruction: &str) -> bool {
    let instruction = instruction.to_ascii_lowercase();
    FORBIDDEN.iter().any(|word| instruction.contains(word))
}

#[test]
fn scanner_flags_sse_instructions() {
    let line = "  10004c:\t0f 29 04 24          \tmovaps %xmm0,(%rsp)";
    assert_eq!(instruction_text(line), Some("movaps %xmm0,(%rsp)"));
    assert!(is_forbidden("movaps %xmm0,(%rsp)"));
    assert!(is_forbidden("ldmxcsr (%rax)"));
    assert!(is_forbidden("vzeroupper"));
    assert!(!is_forbidden("mov    %cr4,%rax"));
    assert_eq!(instruction_text("0000000000100000 <pvh_start32>:"), None);
}

#[test]
fn images_contain_no_sse_or_avx_instructions() {
    let mut offending = Vec::new();
    for name in IMAGE_NAMES {
        let path = image_path(name);
        let output = match Command::new("objdump").arg("-d").arg(&path).output() {
            Ok(output) => output,
            Err(error) => panic!("cannot run objdump ({error}); {SETUP_HINT}"),
        };
        assert!(
            output.status.success(),
            "objdump -d {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let listing = String::from_utf8_lossy(&output.stdout);
        let mut instructions = 0;
        for line in listing.lines() {
            let Some(instruction) = instruction_text(line) else {
                continue;
            };
            instructions += 1;
            if is_forbidden(instruction) {
                offending.push(format!("{name}.elf: {}", line.trim()));
            }
        }
        assert!(
            instructions > 0,
            "objdump found no instructions in {}",
            path.display()
        );
    }
    assert!(
        offending.is_empty(),
        "guest images use SSE/AVX, which the nested KVM cannot run:\n{}",
        offending.join("\n")
    );
}

// ---------------------------------------------------------------------------
// ELF and PVH note

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;

fn bytes_at<const N: usize>(elf: &[u8], offset: u64, what: &str) -> [u8; N] {
    usize::try_from(offset)
        .ok()
        .and_then(|start| elf.get(start..start.checked_add(N)?))
        .and_then(|bytes| bytes.try_into().ok())
        .unwrap_or_else(|| panic!("{what} at offset {offset:#x} is past the end of the file"))
}

fn u16_at(elf: &[u8], offset: u64, what: &str) -> u16 {
    u16::from_le_bytes(bytes_at(elf, offset, what))
}

fn u32_at(elf: &[u8], offset: u64, what: &str) -> u32 {
    u32::from_le_bytes(bytes_at(elf, offset, what))
}

fn u64_at(elf: &[u8], offset: u64, what: &str) -> u64 {
    u64::from_le_bytes(bytes_at(elf, offset, what))
}

#[derive(Debug)]
struct ProgramHeader {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn program_headers(elf: &[u8], name: &str) -> Vec<ProgramHeader> {
    assert_eq!(
        elf.get(..4),
        Some(&b"\x7fELF"[..]),
        "{name}: not an ELF file"
    );
    assert_eq!(elf.get(4), Some(&2), "{name}: not ELF64");
    assert_eq!(elf.get(5), Some(&1), "{name}: not little-endian");
    assert_eq!(
        u16_at(elf, 16, "e_type"),
        2,
        "{name}: not an executable (ET_EXEC)"
    );
    assert_eq!(u16_at(elf, 18, "e_machine"), 62, "{name}: not x86-64");
    let phoff = u64_at(elf, 32, "e_phoff");
    let phentsize = u16_at(elf, 54, "e_phentsize");
    let phnum = u16_at(elf, 56, "e_phnum");
    assert_eq!(phentsize, 56, "{name}: unexpected e_phentsize");
    (0..u64::from(phnum))
        .map(|index| {
            let base = phoff + index * 56;
            ProgramHeader {
                kind: u32_at(elf, base, "p_type"),
                flags: u32_at(elf, base + 4, "p_flags"),
                offset: u64_at(elf, base + 8, "p_offset"),
                vaddr: u64_at(elf, base + 16, "p_vaddr"),
                paddr: u64_at(elf, base + 24, "p_paddr"),
                filesz: u64_at(elf, base + 32, "p_filesz"),
                memsz: u64_at(elf, base + 40, "p_memsz"),
                align: u64_at(elf, base + 48, "p_align"),
            }
        })
        .collect()
}

/// Returns the entry address of the first `Xen` note of type
/// `XEN_ELFNOTE_PHYS32_ENTRY` in the `PT_NOTE` segment `note`.
fn pvh_entry(elf: &[u8], note: &ProgramHeader) -> Option<u64> {
    let align_up = |value: u64| value.next_multiple_of(4);
    let end = note.offset + note.filesz;
    let mut at = note.offset;
    while at + 12 <= end {
        let namesz = u64::from(u32_at(elf, at, "n_namesz"));
        let descsz = u64::from(u32_at(elf, at + 4, "n_descsz"));
        let kind = u32_at(elf, at + 8, "n_type");
        let name_at = at + 12;
        let desc_at = name_at + align_up(namesz);
        let name = usize::try_from(name_at)
            .ok()
            .and_then(|start| elf.get(start..start + usize::try_from(namesz).ok()?));
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && name == Some(&b"Xen\0"[..]) {
            return Some(match descsz {
                4..8 => u64::from(u32_at(elf, desc_at, "PVH entry")),
                8.. => u64_at(elf, desc_at, "PVH entry"),
                _ => panic!("PVH note descriptor is only {descsz} bytes"),
            });
        }
        at = desc_at + align_up(descsz);
    }
    None
}

#[test]
fn images_are_pvh_elf_kernels() {
    for name in IMAGE_NAMES {
        let path = image_path(name);
        let elf = std::fs::read(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        let headers = program_headers(&elf, name);

        let loads: Vec<_> = headers.iter().filter(|h| h.kind == PT_LOAD).collect();
        assert!(!loads.is_empty(), "{name}: no PT_LOAD segment");
        for load in &loads {
            assert_eq!(
                load.paddr, load.vaddr,
                "{name}: p_paddr != p_vaddr in {load:?}"
            );
            assert!(
                load.paddr >= HIGH_MEMORY_START,
                "{name}: segment below 1 MiB: {load:?}"
            );
            assert!(
                load.paddr + load.memsz <= IMAGE_END_LIMIT,
                "{name}: segment above the write-back identity map: {load:?}"
            );
            assert!(
                load.filesz <= load.memsz,
                "{name}: p_filesz > p_memsz in {load:?}"
            );
            assert!(
                load.offset + load.filesz <= elf.len() as u64,
                "{name}: segment past the end of the file: {load:?}"
            );
        }

        let notes: Vec<_> = headers.iter().filter(|h| h.kind == PT_NOTE).collect();
        assert_eq!(
            notes.len(),
            1,
            "{name}: expected one PT_NOTE segment, found {notes:?}"
        );
        let note = notes[0];
        // QEMU aligns the note's name and descriptor to p_align.
        assert_eq!(
            note.align, 4,
            "{name}: the PT_NOTE must be 4-byte aligned: {note:?}"
        );
        let Some(entry) = pvh_entry(&elf, note) else {
            panic!("{name}: no Xen note of type {XEN_ELFNOTE_PHYS32_ENTRY} (PVH entry)");
        };
        assert!(
            entry < 1 << 32,
            "{name}: PVH entry {entry:#x} is not a 32-bit address"
        );
        assert!(
            loads.iter().any(|load| load.flags & PF_X != 0
                && (load.paddr..load.paddr + load.filesz).contains(&entry)),
            "{name}: PVH entry {entry:#x} is not in an executable segment"
        );
        let e_entry = u64_at(&elf, 24, "e_entry");
        assert!(
            e_entry >= HIGH_MEMORY_START,
            "{name}: e_entry {e_entry:#x} below 1 MiB"
        );
    }
}

#[test]
fn images_are_small() {
    for name in IMAGE_NAMES {
        let path = image_path(name);
        let size = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("cannot stat {}: {error}", path.display()))
            .len();
        assert!(
            size < MAX_IMAGE_SIZE,
            "{name}.elf is {size} bytes, the limit is {MAX_IMAGE_SIZE}"
        );
    }
}

// ---------------------------------------------------------------------------
// Booting under QEMU

/// What a QEMU run produced.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Boots `image` in QEMU with TCG on `machine`, with `extra` arguments, and
/// waits for QEMU to exit (at most [`QEMU_TIMEOUT`]).
fn boot(machine: &str, image: &Path, extra: &[&str]) -> Run {
    let mut command = Command::new(QEMU);
    command
        .args(["-accel", "tcg", "-M", machine, "-m", "64"])
        .args([
            "-nodefaults",
            "-nographic",
            "-no-reboot",
            "-display",
            "none",
        ])
        .args(["-serial", "stdio"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .arg("-kernel")
        .arg(image)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!("cannot run {QEMU} ({error}); {SETUP_HINT}"),
    };
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for QEMU") {
            break Some(status);
        }
        if started.elapsed() > QEMU_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let run_stdout = stdout.join().expect("stdout reader");
    let run_stderr = stderr.join().expect("stderr reader");
    let Some(status) = status else {
        panic!(
            "{QEMU} -M {machine} {} did not exit within {QEMU_TIMEOUT:?}\n\
             stdout:\n{run_stdout}\nstderr:\n{run_stderr}",
            image.display()
        );
    };
    Run {
        status,
        stdout: run_stdout,
        stderr: run_stderr,
    }
}

fn assert_run(run: &Run, expected_output: &str, expected_status: i32, exact: bool) {
    let output_ok = if exact {
        run.stdout == expected_output
    } else {
        run.stdout.contains(expected_output)
    };
    assert!(
        output_ok && run.status.code() == Some(expected_status),
        "expected exit status {expected_status} and {} output {expected_output:?};\n\
         got {} and output {:?}\nstderr:\n{}",
        if exact { "exactly the" } else { "the" },
        run.status,
        run.stdout,
        run.stderr
    );
}

const HELLO_EXIT_3: &str = "Hello from a Strata guest!\ncmdline: from-qemu exit=3\n";

#[test]
fn hello_boots_on_qemu_pc() {
    // SeaBIOS prints its banner before the guest, so look for the lines.
    let run = boot("pc", &image_path("hello"), &["-append", "from-qemu exit=3"]);
    assert_run(&run, HELLO_EXIT_3, qemu_exit_status(3), false);
}

#[test]
fn hello_boots_on_qemu_microvm() {
    let run = boot(
        "microvm",
        &image_path("hello"),
        &["-append", "from-qemu exit=3"],
    );
    assert_run(&run, HELLO_EXIT_3, qemu_exit_status(3), true);
}

#[test]
fn hello_without_command_line_exits_with_zero() {
    let run = boot("microvm", &image_path("hello"), &[]);
    assert_run(
        &run,
        "Hello from a Strata guest!\ncmdline: \n",
        qemu_exit_status(0),
        true,
    );
}

#[test]
fn triple_fault_shuts_the_vm_down() {
    // With -no-reboot, QEMU exits with 0 on the shutdown a triple fault causes;
    // an exit through isa-debug-exit would give an odd status.
    let run = boot("microvm", &image_path("triple-fault"), &[]);
    assert_run(
        &run,
        "triple-fault: loading an empty IDT and raising #UD\n",
        0,
        true,
    );
}

#[test]
fn popcnt_survives_on_a_cpu_with_popcnt() {
    // QEMU's default CPU model has no popcnt (the guest would triple-fault);
    // `-cpu max` has it, like real hardware.
    let run = boot("microvm", &image_path("popcnt"), &["-cpu", "max"]);
    let expected = "popcnt: executing popcnt\npopcnt: survived\n";
    assert_run(&run, expected, qemu_exit_status(0), true);
}
