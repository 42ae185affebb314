//! The smallest useful virtwasm driver, and the example in the SDK's documentation.
//!
//! It "runs" guests that do nothing: start, shutdown, destroy, suspend and resume move the
//! state, and everything else answers `unsupported`. It keeps no state of its own (the host
//! hands every verb the domain's record) and needs no capability but logging.

use virtwasm_sdk::types::*;
use virtwasm_sdk::{Hypervisor, Network, Storage, VerbResult, error, export_driver, log};

struct Example;

fn now(state: DomainState) -> VerbResult<DomainRuntime> {
    Ok(DomainRuntime {
        state,
        driver_data: String::new(),
    })
}

fn state_of(dom: &DomainRef) -> DomainState {
    dom.runtime
        .as_ref()
        .map(|r| r.state)
        .unwrap_or(DomainState::Shutoff(ShutoffReason::Unknown))
}

impl Hypervisor for Example {
    fn open(_path: String, _params: Vec<(String, String)>) -> VerbResult<InitialObjects> {
        Ok(InitialObjects {
            domains: vec![],
            pools: vec![],
            networks: vec![],
        })
    }

    fn start(dom: DomainRef, paused: bool) -> VerbResult<DomainRuntime> {
        log::info(&format!("starting {}", dom.def.name));
        now(if paused {
            DomainState::Paused(PausedReason::User)
        } else {
            DomainState::Running(RunningReason::Booted)
        })
    }

    fn shutdown(dom: DomainRef, _modes: ShutdownModes) -> VerbResult<DomainRuntime> {
        match state_of(&dom) {
            DomainState::Running(_) => now(DomainState::Shutoff(ShutoffReason::Shutdown)),
            _ => Err(error(ErrorKind::InvalidState, "domain is not running")),
        }
    }

    fn destroy(_dom: DomainRef, _graceful: bool) -> VerbResult<DomainRuntime> {
        now(DomainState::Shutoff(ShutoffReason::Destroyed))
    }

    fn suspend(dom: DomainRef) -> VerbResult<DomainRuntime> {
        match state_of(&dom) {
            DomainState::Running(_) => now(DomainState::Paused(PausedReason::User)),
            _ => Err(error(ErrorKind::InvalidState, "domain is not running")),
        }
    }

    fn resume(dom: DomainRef) -> VerbResult<DomainRuntime> {
        match state_of(&dom) {
            DomainState::Paused(_) => now(DomainState::Running(RunningReason::Unpaused)),
            _ => Err(error(ErrorKind::InvalidState, "domain is not paused")),
        }
    }
}

impl Storage for Example {}
impl Network for Example {}

export_driver!(Example);
