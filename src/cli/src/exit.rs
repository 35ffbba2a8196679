//! Exit statuses of the `strata` binary, modelled on `docker run`: the
//! guest's own code passes through, and values the guest is unlikely to use
//! report Strata's own failures.

/// How `strata` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest's debug-exit code.
    Guest(u8),
    /// The guest crashed.
    GuestCrashed,
    /// A signal stopped the guest.
    Signalled(i32),
    /// A command other than `run` succeeded.
    Success,
}

/// Strata refused or failed (bad flags, files, KVM): one line for the user.
#[derive(Debug)]
pub struct Failure(pub String);

/// Strata could not start or run the guest.
pub const STATUS_STRATA_FAILED: u8 = 125;
/// The guest crashed.
pub const STATUS_GUEST_CRASHED: u8 = 126;

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Guest(code) => code,
            ExitStatus::GuestCrashed => STATUS_GUEST_CRASHED,
            ExitStatus::Signalled(sig) => u8::try_from(128 + sig).unwrap_or(u8::MAX),
            ExitStatus::Success => 0,
        }
    }
}
