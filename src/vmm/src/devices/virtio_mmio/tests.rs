//! The transport's register protocol, driven as a guest driver would, with
//! a device that records what it is asked to do.

use super::registers::*;
use super::*;
use crate::layout::ram_ranges;
use crate::memory::GuestRam;

#[derive(Default)]
struct Recorder {
    activated: Vec<(u64, Vec<QueueLayout>)>,
    resets: usize,
    notified: Vec<u16>,
    config: [u8; 8],
    refuse: bool,
}

const OFFERED: u64 = VIRTIO_F_VERSION_1 | 1 << 9;

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        2
    }
    fn features(&self) -> u64 {
        OFFERED
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![256, 256]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let start = offset as usize;
        match self.config.get(start..start + data.len()) {
            Some(bytes) => data.copy_from_slice(bytes),
            None => data.fill(0),
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        if let Some(bytes) = self.config.get_mut(start..start + data.len()) {
            bytes.copy_from_slice(data);
        }
    }
    fn activate(&mut self, features: u64, queues: &[QueueLayout]) -> Result<(), String> {
        if self.refuse {
            return Err("refused".into());
        }
        self.activated.push((features, queues.to_vec()));
        Ok(())
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
    fn notify(&mut self, index: u16) {
        self.notified.push(index);
    }
}

struct Driver {
    dev: VirtioMmio<Recorder>,
    _ram: GuestRam,
}

impl Driver {
    fn new() -> Self {
        let ram = GuestRam::new(&ram_ranges(4 << 20)).unwrap();
        let dev = VirtioMmio::new(Recorder::default(), ram.memory().clone(), "test".into());
        Self { dev, _ram: ram }
    }
    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.dev.read(offset, &mut data);
        u32::from_le_bytes(data)
    }
    fn write(&mut self, offset: u64, value: u32) {
        self.dev.write(offset, &value.to_le_bytes());
    }
    fn features(&mut self, features: u64) {
        self.write(REG_DRIVER_FEATURES_SEL, 0);
        self.write(REG_DRIVER_FEATURES, features as u32);
        self.write(REG_DRIVER_FEATURES_SEL, 1);
        self.write(REG_DRIVER_FEATURES, (features >> 32) as u32);
    }
    fn queue(&mut self, index: u32, size: u32, desc: u64, avail: u64, used: u64) {
        self.write(REG_QUEUE_SEL, index);
        self.write(REG_QUEUE_NUM, size);
        for (low, addr) in [
            (REG_QUEUE_DESC_LOW, desc),
            (REG_QUEUE_AVAIL_LOW, avail),
            (REG_QUEUE_USED_LOW, used),
        ] {
            self.write(low, addr as u32);
            self.write(low + 4, (addr >> 32) as u32);
        }
        self.write(REG_QUEUE_READY, 1);
    }
    /// The usual bring-up of queue 0 with a valid layout.
    fn bring_up(&mut self, features: u64) -> u32 {
        self.write(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.features(features);
        self.write(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.queue(0, 16, 0x10_0000, 0x10_1000, 0x10_2000);
        self.write(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        self.read(REG_STATUS)
    }
}

#[test]
fn identity_registers() {
    let mut d = Driver::new();
    assert_eq!(d.read(REG_MAGIC), 0x7472_6976);
    assert_eq!(d.read(REG_VERSION), 2);
    assert_eq!(d.read(REG_DEVICE_ID), 2);
    d.write(REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.read(REG_DEVICE_FEATURES), 1);
    d.write(REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(d.read(REG_DEVICE_FEATURES), 1 << 9);
    d.write(REG_QUEUE_SEL, 1);
    assert_eq!(d.read(REG_QUEUE_NUM_MAX), 256);
    d.write(REG_QUEUE_SEL, 2);
    assert_eq!(d.read(REG_QUEUE_NUM_MAX), 0, "no queue 2");
}

#[test]
fn a_driver_brings_the_device_up() {
    let mut d = Driver::new();
    let status = d.bring_up(OFFERED);
    assert_eq!(status & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(status & status::DRIVER_OK, status::DRIVER_OK);
    let (features, queues) = &d.dev.device().activated[0];
    assert_eq!(*features, OFFERED);
    assert_eq!(queues[0].size, 16);
    assert_eq!(queues[0].desc, 0x10_0000);
    assert_eq!(queues[0].used, 0x10_2000);
    assert!(!queues[1].ready);
    // Queue registers are frozen while the device runs.
    d.write(REG_QUEUE_SEL, 0);
    d.write(REG_QUEUE_NUM, 8);
    assert_eq!(d.dev.active_state().unwrap().1[0].size, 16);
    d.write(REG_QUEUE_NOTIFY, 1);
    assert_eq!(d.dev.device().notified, vec![1]);
    // Reset stops the device and clears the queues.
    d.write(REG_STATUS, 0);
    assert_eq!(d.dev.device().resets, 1);
    assert_eq!(d.read(REG_STATUS), 0);
    assert!(d.dev.active_state().is_none());
}

#[test]
fn features_not_offered_or_without_version_1_are_refused() {
    let mut d = Driver::new();
    let status = d.bring_up(OFFERED | 1 << 20);
    assert_eq!(status & status::FEATURES_OK, 0);
    assert_ne!(status & status::DEVICE_NEEDS_RESET, 0);
    assert!(d.dev.device().activated.is_empty());

    let mut d = Driver::new();
    let status = d.bring_up(1 << 9);
    assert_eq!(status & status::FEATURES_OK, 0);
    assert!(d.dev.device().activated.is_empty());
}

#[test]
fn bad_queue_layouts_are_refused() {
    let cases: [(u32, u64, u64, u64); 7] = [
        (0, 0x10_0000, 0x10_1000, 0x10_2000),        // empty queue
        (0x1_0010, 0x10_0000, 0x10_1000, 0x10_2000), // wider than the register
        (12, 0x10_0000, 0x10_1000, 0x10_2000),       // not a power of two
        (512, 0x10_0000, 0x10_1000, 0x10_2000),      // above the maximum
        (16, 0x10_0008, 0x10_1000, 0x10_2000),       // misaligned table
        (16, 0x10_0000, 0x10_1000, 0x3f_fff0),       // used ring runs past RAM
        (16, 0xd000_0000, 0x10_1000, 0x10_2000),     // table outside RAM
    ];
    for (size, desc, avail, used) in cases {
        let mut d = Driver::new();
        d.write(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        d.features(OFFERED);
        d.write(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        d.queue(0, size, desc, avail, used);
        d.write(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert_ne!(
            d.read(REG_STATUS) & status::DEVICE_NEEDS_RESET,
            0,
            "size {size} desc {desc:#x} used {used:#x}"
        );
        assert!(d.dev.device().activated.is_empty());
    }
}

#[test]
fn a_device_that_cannot_start_needs_reset() {
    let mut d = Driver::new();
    d.dev.device_mut().refuse = true;
    assert_ne!(d.bring_up(OFFERED) & status::DEVICE_NEEDS_RESET, 0);
    assert!(d.dev.active_state().is_none());
    assert_eq!(d.dev.device().resets, 1, "what did start is stopped");
}

#[test]
fn odd_accesses_are_harmless() {
    let mut d = Driver::new();
    // Narrow and misaligned register accesses read zero and change nothing.
    let mut two = [0xaau8; 2];
    d.dev.read(REG_MAGIC, &mut two);
    assert_eq!(two, [0, 0]);
    d.dev.write(REG_STATUS, &[1]);
    d.dev.write(REG_STATUS + 1, &[1, 0, 0, 0]);
    assert_eq!(d.read(REG_STATUS), 0);
    // Configuration space takes any width; beyond its end it reads zero.
    d.dev.write(CONFIG_SPACE_OFFSET + 2, &[7, 8]);
    let mut cfg = [0u8; 4];
    d.dev.read(CONFIG_SPACE_OFFSET, &mut cfg);
    assert_eq!(cfg, [0, 0, 7, 8]);
    d.dev.read(CONFIG_SPACE_OFFSET + 0x800, &mut cfg);
    assert_eq!(cfg, [0; 4]);
    // Notifies before the device runs go nowhere.
    d.write(REG_QUEUE_NOTIFY, 0);
    assert!(d.dev.device().notified.is_empty());
}

#[test]
fn the_cmdline_word_is_in_linux_form() {
    assert_eq!(
        VirtioMmio::<Recorder>::cmdline_word(0xd000_1000, 6),
        "virtio_mmio.device=4K@0xd0001000:6"
    );
}
