//! The 16550 UART on COM1, from `vm-superio`, with its interrupt on an irqfd.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::{PioAction, PioDevice};

/// Where the guest's serial output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// Discarded.
    Null,
}

/// The serial output could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SerialOutputError {
    #[error("cannot open serial output file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot duplicate standard output for the serial console: {0}")]
    Stdout(#[source] std::io::Error),
}

impl SerialOutput {
    fn open(&self) -> Result<Box<dyn Write + Send>, SerialOutputError> {
        match self {
            // An unbuffered handle on fd 1: every byte the guest writes is
            // visible at once, and nothing is left in a buffer at exit.
            SerialOutput::Stdout => std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map(|fd| Box::new(File::from(fd)) as Box<dyn Write + Send>)
                .map_err(SerialOutputError::Stdout),
            SerialOutput::File(path) => File::create(path)
                .map(|f| Box::new(f) as Box<dyn Write + Send>)
                .map_err(|source| SerialOutputError::File {
                    path: path.clone(),
                    source,
                }),
            SerialOutput::Null => Ok(Box::new(std::io::sink())),
        }
    }
}

/// Raises the UART's interrupt by writing its irqfd.
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The COM1 console.
pub struct SerialConsole {
    uart: Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>,
}

impl SerialConsole {
    /// Creates the UART writing to `output`, signalling interrupts on `irq`.
    pub fn new(output: &SerialOutput, irq: EventFd) -> Result<Self, SerialOutputError> {
        Ok(Self {
            uart: Serial::new(IrqTrigger(irq), output.open()?),
        })
    }
}

impl PioDevice for SerialConsole {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = u8::try_from(offset).map_or(0xff, |off| self.uart.read(off));
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> PioAction {
        if let (Ok(offset), Some(value)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.uart.write(offset, *value) {
                log::warn!("serial console: {e:?}");
            }
        }
        PioAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_thr_reach_the_file() {
        let dir = std::env::temp_dir().join(format!("strata-serial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.txt");
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut console = SerialConsole::new(&SerialOutput::File(path.clone()), irq).unwrap();
        for b in b"hi\n" {
            console.write(0, &[*b]);
        }
        let mut lsr = [0u8];
        console.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter reports empty");
        assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unwritable_output_is_reported_with_its_path() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let bad = PathBuf::from("/nonexistent-dir/serial.log");
        let err = SerialConsole::new(&SerialOutput::File(bad), irq)
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent-dir/serial.log"));
    }
}
