//! Running the library's Lua scripts as Redis does: Lua 5.1, `KEYS`,
//! `ARGV`, `redis.call` / `redis.pcall`, Redis's conversion rules between
//! Lua values and replies, and the `bit` library the scripts use — the whole
//! script in one step, nothing else running meanwhile.

use mlua::{Lua, MultiValue, Value as LuaValue};
use redis::{RedisResult, Value};

use super::{server_error, State};

/// `bit.band` / `bit.bor` for the small non-negative integers the scripts
/// use (flag bytes); Redis ships LuaBitOp, plain Lua 5.1 has no `bit`.
const BIT: &str = r"
bit = {}
local function each_bit(a, b, keep)
    local result, place = 0, 1
    while a > 0 or b > 0 do
        local x, y = a % 2, b % 2
        if keep(x, y) then result = result + place end
        a, b, place = (a - x) / 2, (b - y) / 2, place * 2
    end
    return result
end
function bit.band(a, b) return each_bit(a, b, function(x, y) return x == 1 and y == 1 end) end
function bit.bor(a, b) return each_bit(a, b, function(x, y) return x == 1 or y == 1 end) end
";

pub(super) fn eval(
    state: &mut State,
    now_ms: u64,
    code: &str,
    keys: &[Vec<u8>],
    args: &[Vec<u8>],
) -> RedisResult<Value> {
    let lua = Lua::new();
    let state = std::cell::RefCell::new(state);
    let call = |lua: &Lua, args: MultiValue, protected: bool| -> mlua::Result<LuaValue> {
        let args: Vec<Vec<u8>> = args
            .into_iter()
            .map(|v| match v {
                LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
                LuaValue::Integer(i) => Ok(i.to_string().into_bytes()),
                LuaValue::Number(n) => Ok(format_number(n).into_bytes()),
                _ => Err(mlua::Error::runtime(
                    "Lua redis lib command arguments must be strings or integers",
                )),
            })
            .collect::<mlua::Result<_>>()?;
        match state.borrow_mut().command(&args, now_ms) {
            Ok(reply) => reply_to_lua(lua, reply),
            Err(err) if protected => {
                let table = lua.create_table()?;
                table.set("err", err.to_string())?;
                Ok(LuaValue::Table(table))
            }
            Err(err) => Err(mlua::Error::runtime(err.to_string())),
        }
    };
    let run = || -> mlua::Result<Value> {
        lua.load(BIT).exec()?;
        let globals = lua.globals();
        globals.set("KEYS", byte_table(&lua, keys)?)?;
        globals.set("ARGV", byte_table(&lua, args)?)?;
        lua.scope(|scope| {
            let redis = lua.create_table()?;
            redis.set(
                "call",
                scope.create_function(|lua, args: MultiValue| call(lua, args, false))?,
            )?;
            redis.set(
                "pcall",
                scope.create_function(|lua, args: MultiValue| call(lua, args, true))?,
            )?;
            lua.globals().set("redis", redis)?;
            let result: LuaValue = lua.load(code).eval()?;
            lua_to_reply(result)
        })
    };
    match run() {
        Ok(Value::ServerError(_)) => Err(server_error("script error reply")),
        Ok(value) => Ok(value),
        Err(err) => Err(server_error(format!("script failed: {err}"))),
    }
}

fn byte_table(lua: &Lua, items: &[Vec<u8>]) -> mlua::Result<mlua::Table> {
    let table = lua.create_table()?;
    for (i, item) in items.iter().enumerate() {
        table.set(i + 1, lua.create_string(item)?)?;
    }
    Ok(table)
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// A reply as `redis.call` hands it to Lua.
fn reply_to_lua(lua: &Lua, reply: Value) -> mlua::Result<LuaValue> {
    Ok(match reply {
        Value::Nil => LuaValue::Boolean(false),
        Value::Int(i) => LuaValue::Integer(i),
        Value::BulkString(bytes) => LuaValue::String(lua.create_string(&bytes)?),
        Value::SimpleString(s) => status_table(lua, &s)?,
        Value::Okay => status_table(lua, "OK")?,
        Value::Array(items) => {
            let table = lua.create_table()?;
            for (i, item) in items.into_iter().enumerate() {
                table.set(i + 1, reply_to_lua(lua, item)?)?;
            }
            LuaValue::Table(table)
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "reply {other:?} not simulated"
            )))
        }
    })
}

fn status_table(lua: &Lua, status: &str) -> mlua::Result<LuaValue> {
    let table = lua.create_table()?;
    table.set("ok", status)?;
    Ok(LuaValue::Table(table))
}

/// A script's result as Redis replies with it.
fn lua_to_reply(value: LuaValue) -> mlua::Result<Value> {
    Ok(match value {
        LuaValue::Nil | LuaValue::Boolean(false) => Value::Nil,
        LuaValue::Boolean(true) => Value::Int(1),
        LuaValue::Integer(i) => Value::Int(i),
        LuaValue::Number(n) => Value::Int(n as i64),
        LuaValue::String(s) => Value::BulkString(s.as_bytes().to_vec()),
        LuaValue::Table(table) => {
            if let Ok(LuaValue::String(err)) = table.get::<LuaValue>("err") {
                return Err(mlua::Error::runtime(err.to_string_lossy()));
            }
            if let Ok(LuaValue::String(ok)) = table.get::<LuaValue>("ok") {
                return Ok(Value::SimpleString(ok.to_string_lossy()));
            }
            let mut items = Vec::new();
            for i in 1.. {
                match table.get::<LuaValue>(i)? {
                    LuaValue::Nil => break,
                    item => items.push(lua_to_reply(item)?),
                }
            }
            Value::Array(items)
        }
        _ => Value::Nil,
    })
}
