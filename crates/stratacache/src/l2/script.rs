//! A Lua script with its source kept beside redis-rs's handle: Redis runs it
//! by digest (EVALSHA), a simulated Redis runs the source itself.

/// A Lua script run on one hash slot (see [`super::L2::run_script`]).
pub(crate) struct LuaScript {
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    code: String,
    script: redis::Script,
}

impl LuaScript {
    pub(crate) fn new(code: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            script: redis::Script::new(&code),
            code,
        }
    }

    /// The source, for a simulated Redis.
    #[cfg(feature = "simulation")]
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    pub(crate) fn redis(&self) -> &redis::Script {
        &self.script
    }
}
