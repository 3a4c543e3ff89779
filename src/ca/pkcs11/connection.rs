//! One initialized PKCS#11 module, logged in to the token, with the key found and a pool
//! of sessions to sign in.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::uri::Pkcs11Uri;

/// Everything signing needs, for as long as the token answers. Dropping it closes the
/// sessions, then finalizes the module (fields drop in order): PKCS#11 modules (SoftHSM2
/// among them) see a token that came back only after `C_Finalize` and `C_Initialize`
/// again.
pub(super) struct Connection {
    idle: Mutex<Vec<Session>>,
    /// Open while the connection lives: closing an application's last session logs it
    /// out of the token (PKCS#11 §5.6), which would fail every pooled session.
    _login: Mutex<Session>,
    pub slot: Slot,
    pub key: ObjectHandle,
    module: Module,
}

/// An initialized module, finalized when dropped; `finalized` says when that is done.
pub(super) struct Module(pub Pkcs11, Arc<AtomicBool>);

impl Module {
    pub fn load(path: &Path) -> Result<Self, String> {
        let context = Pkcs11::new(path)
            .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", path.display()))?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| format!("C_Initialize failed: {e}"))?;
        Ok(Module(context, Arc::new(AtomicBool::new(false))))
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if let Err(e) = self.0.clone().finalize() {
            tracing::debug!(error = %e, "C_Finalize failed");
        }
        self.1.store(true, Ordering::Release);
    }
}

impl Connection {
    /// Loads and initializes `module`, finds the token and the key `uri` names, logs in
    /// with `pin`.
    pub fn open(module: &Path, uri: &Pkcs11Uri, pin: &str) -> Result<Self, OpenError> {
        // From here on, a failure drops `module`, which finalizes it.
        let module = Module::load(module)?;
        let slot = find_slot(&module.0, uri)?;
        let session = module
            .0
            .open_ro_session(slot)
            .map_err(|e| format!("cannot open a session with the token: {e}"))?;
        login(&session, pin)?;
        let key = find_key(&session, uri)?;
        Ok(Connection {
            idle: Mutex::new(Vec::new()),
            _login: Mutex::new(session),
            slot,
            key,
            module,
        })
    }

    /// An idle session, or a new one.
    pub fn session(&self) -> Result<Session, Error> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(session) => Ok(session),
            None => self.module.0.open_ro_session(self.slot),
        }
    }

    /// Set once this connection's module is finalized.
    pub fn closed(&self) -> Arc<AtomicBool> {
        self.module.1.clone()
    }

    /// Puts `session` back for the next signature, keeping at most `keep` idle.
    pub fn give_back(&self, session: Session, keep: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < keep {
            idle.push(session);
        }
    }
}

/// Why a connection could not be opened.
pub(super) enum OpenError {
    /// CKR_PIN_INCORRECT: trying again would count towards locking the token.
    PinRefused,
    Other(String),
}

impl From<String> for OpenError {
    fn from(e: String) -> Self {
        OpenError::Other(e)
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::PinRefused => f.write_str(PIN_REFUSED),
            OpenError::Other(e) => f.write_str(e),
        }
    }
}

const PIN_REFUSED: &str = "the token refused the PIN (CKR_PIN_INCORRECT)";

/// Logs the application in to the token as its user (all its sessions share the login).
pub(super) fn login(session: &Session, pin: &str) -> Result<(), OpenError> {
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(Error::Pkcs11(RvError::PinIncorrect, _)) => Err(OpenError::PinRefused),
        Err(Error::Pkcs11(RvError::PinLocked, _)) => Err(OpenError::Other(
            "the token's user PIN is locked (CKR_PIN_LOCKED): the security officer must \
             unlock it"
                .into(),
        )),
        Err(e) => Err(OpenError::Other(format!("cannot log in to the token: {e}"))),
    }
}

/// The one slot whose token matches what `uri` says (label, serial, model, manufacturer,
/// slot id). Several matching tokens are refused: signing with the wrong one is worse
/// than not starting.
pub(super) fn find_slot(context: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, String> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| format!("cannot list the module's slots: {e}"))?;
    let mut found = Vec::new();
    for slot in slots {
        if uri.slot_id.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let Ok(info) = context.get_token_info(slot) else {
            continue;
        };
        let matches = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|w| w == actual.trim_end())
        };
        if matches(&uri.token, info.label())
            && matches(&uri.serial, info.serial_number())
            && matches(&uri.model, info.model())
            && matches(&uri.manufacturer, info.manufacturer_id())
        {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(format!("no token matching {uri} is present")),
        _ => Err(format!(
            "{} tokens match {uri}: name one (token=, serial= or slot-id=)",
            found.len()
        )),
    }
}

/// The private key `uri` names by label and/or id: exactly one.
pub(super) fn find_key(session: &Session, uri: &Pkcs11Uri) -> Result<ObjectHandle, String> {
    match private_keys(session, uri)?.as_slice() {
        [key] => Ok(*key),
        [] => Err(format!("the token holds no private key matching {uri}")),
        keys => Err(format!(
            "{} private keys match {uri}: name one by `id=` as well",
            keys.len()
        )),
    }
}

/// Every private key whose label and id are as `uri` says.
pub(super) fn private_keys(
    session: &Session,
    uri: &Pkcs11Uri,
) -> Result<Vec<ObjectHandle>, String> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    session
        .find_objects(&template)
        .map_err(|e| format!("cannot search the token: {e}"))
}
