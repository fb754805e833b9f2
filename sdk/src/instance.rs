//! The one plugin instance of this component.
//!
//! The WIT exports are free functions, but plugin authors write methods on
//! their own type. `configure` builds that value and parks it here; every
//! later call borrows it back. A component instance is single-threaded, so a
//! thread-local is the whole synchronisation story.

use std::any::Any;
use std::cell::RefCell;

use crate::Error;

thread_local! {
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Stores the configured plugin, replacing any earlier one (a second
/// `configure` starts over rather than failing).
pub(crate) fn install<T: 'static>(plugin: T) {
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
}

/// Runs `call` on the configured plugin, or fails with `Error::Other` when
/// `configure` has not succeeded yet.
pub(crate) fn with<T: 'static, R>(
    call: impl FnOnce(&mut T) -> Result<R, Error>,
) -> Result<R, Error> {
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let plugin = slot
            .as_mut()
            .and_then(|plugin| plugin.downcast_mut::<T>())
            .ok_or_else(|| Error::Other("not configured".to_string()))?;
        call(plugin)
    })
}
