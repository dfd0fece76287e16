//! The serde `Deserializer` behind `decode`: one value of a `serde_json::Value` tree, or a
//! placeholder standing in for a value that is wrong or missing.
//!
//! Each `deserialize_*` method checks the value against what the visitor asked for; on a
//! mismatch it records the problem in the pass's `Found` and feeds the visitor a placeholder.

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess};
use serde::de::{Deserializer, Visitor};
use serde_json::Value;

use super::{Ctx, Error};
use crate::config::common::suggest;
use crate::config::{field_index, field_key};

/// The deserializer for one value. `value: None` is a placeholder: it yields whatever the
/// visitor asks for and reports nothing.
pub(super) struct De<'a> {
    pub(super) value: Option<&'a Value>,
    pub(super) path: String,
    pub(super) ctx: &'a Ctx<'a>,
}

impl<'a> De<'a> {
    fn child(&self, value: Option<&'a Value>, path: String) -> Self {
        De {
            value,
            path,
            ctx: self.ctx,
        }
    }

    /// Record that the value here is not what the visitor wants; it becomes a placeholder.
    fn mismatch(&self, message: String) {
        let mut found = self.ctx.found.borrow_mut();
        found.problems.push((self.path.clone(), message));
        found.poisoned.push(self.path.clone());
    }

    fn expected(&self, what: &str) {
        if let Some(v) = self.value {
            self.mismatch(format!("expected {what}, found {}", describe(v)));
        }
    }

    /// The integer here if it is within `min..=max`; otherwise record why and return `None`.
    fn integer(&self, min: i128, max: i128) -> Option<i128> {
        let v = self.value?;
        let n = match v {
            Value::Number(n) => n
                .as_u64()
                .map(i128::from)
                .or_else(|| n.as_i64().map(i128::from)),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.mismatch(format!(
                    "{n} is out of range; use a whole number from {min} to {max}"
                ));
                None
            }
            None if matches!(v, Value::Number(_)) => {
                self.mismatch(format!(
                    "{v} is not a whole number; use one from {min} to {max}"
                ));
                None
            }
            None => {
                self.expected("a whole number");
                None
            }
        }
    }

    fn string(&self) -> Option<&'a str> {
        match self.value? {
            Value::String(s) => Some(s),
            other => {
                let hint = match other {
                    Value::Bool(_) | Value::Number(_) => "; put it in quotes",
                    _ => "",
                };
                self.mismatch(format!(
                    "expected a string, found {}{hint}",
                    describe(other)
                ));
                None
            }
        }
    }

    fn finish<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        result.map_err(|e| e.locate(&self.path, self.value.is_none()))
    }
}

/// A short description of a value for "found ..." messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("the string {head:?}...")
        }
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a mapping".to_owned(),
    }
}

macro_rules! integer_method {
    ($method:ident, $ty:ty, $visit:ident, $as:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let n = self.integer(i128::from(<$ty>::MIN), i128::from(<$ty>::MAX));
            let n = n.and_then(|n| <$as>::try_from(n).ok()).unwrap_or_default();
            let result = visitor.$visit(n);
            self.finish(result)
        }
    };
}

impl<'de> Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match self.value {
            // Only untyped fields (`serde_json::Value`) get here; they take the value as is.
            Some(v) => v
                .clone()
                .deserialize_any(visitor)
                .map_err(de::Error::custom),
            None => visitor.visit_unit(),
        };
        self.finish(result)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let b = match self.value {
            Some(Value::Bool(b)) => *b,
            _ => {
                self.expected("true or false");
                false
            }
        };
        let result = visitor.visit_bool(b);
        self.finish(result)
    }

    integer_method!(deserialize_i8, i8, visit_i64, i64);
    integer_method!(deserialize_i16, i16, visit_i64, i64);
    integer_method!(deserialize_i32, i32, visit_i64, i64);
    integer_method!(deserialize_i64, i64, visit_i64, i64);
    integer_method!(deserialize_u8, u8, visit_u64, u64);
    integer_method!(deserialize_u16, u16, visit_u64, u64);
    integer_method!(deserialize_u32, u32, visit_u64, u64);
    integer_method!(deserialize_u64, u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let f = match self.value {
            Some(Value::Number(n)) => n.as_f64().unwrap_or_default(),
            _ => {
                self.expected("a number");
                0.0
            }
        };
        let result = visitor.visit_f64(f);
        self.finish(result)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let c = self.string().map(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => c,
                _ => {
                    self.mismatch(format!("expected one character, found {s:?}"));
                    ' '
                }
            }
        });
        let result = visitor.visit_char(c.unwrap_or(' '));
        self.finish(result)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let s = self.string().unwrap_or_default();
        let result = visitor.visit_str(s);
        self.finish(result)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let s = self.string().unwrap_or_default();
        let result = visitor.visit_bytes(s.as_bytes());
        self.finish(result)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            None | Some(Value::Null) => {
                let result = visitor.visit_none();
                self.finish(result)
            }
            Some(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if !matches!(self.value, None | Some(Value::Null)) {
            self.expected("nothing (null)");
        }
        let result = visitor.visit_unit();
        self.finish(result)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let items: &[Value] = match self.value {
            Some(Value::Array(items)) => items,
            Some(Value::Object(_)) => {
                self.expected("a list; write each item on its own line starting with \"- \"");
                &[]
            }
            _ => {
                self.expected("a list");
                &[]
            }
        };
        let result = visitor.visit_seq(Seq {
            de: &self,
            items,
            next: 0,
        });
        self.finish(result)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let entries: Vec<(&str, Option<&Value>)> = match self.value {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.as_str(), Some(v))).collect(),
            _ => {
                self.expected("a mapping");
                Vec::new()
            }
        };
        let result = visitor.visit_map(Map {
            de: &self,
            entries,
            next: 0,
        });
        self.finish(result)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut entries: Vec<(&str, Option<&Value>)> = Vec::new();
        let mut placeholder = self.value.is_none();
        match self.value {
            Some(Value::Object(map)) => {
                for (key, value) in map {
                    match fields.iter().find(|f| **f == key.as_str()) {
                        Some(field) => entries.push((field, Some(value))),
                        None => self.unknown_field(key, fields),
                    }
                }
            }
            Some(_) => {
                self.expected("a mapping");
                placeholder = true;
            }
            None => {}
        }
        for field in fields {
            let absent = !entries.iter().any(|(k, _)| k == field);
            if absent && self.ctx.fill.contains(&field_key(&self.path, field)) {
                entries.push((field, None));
            }
        }
        let result = visitor.visit_map(Map {
            de: &self,
            entries,
            next: 0,
        });
        result.map_err(|e| e.locate(&self.path, placeholder))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let variant = match self.value {
            Some(Value::String(s)) if variants.contains(&s.as_str()) => s.as_str(),
            Some(Value::String(s)) => {
                let hint = match suggest(s, variants) {
                    Some(near) => format!(" (did you mean {near}?)"),
                    None => String::new(),
                };
                self.mismatch(format!(
                    "unknown value {s:?}; use one of {}{hint}",
                    variants.join(", ")
                ));
                variants.first().copied().unwrap_or_default()
            }
            _ => {
                self.expected(&format!("one of {}", variants.join(", ")));
                variants.first().copied().unwrap_or_default()
            }
        };
        let access: StrDeserializer<'_, Error> = variant.into_deserializer();
        let result = visitor.visit_enum(access);
        self.finish(result)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

impl De<'_> {
    fn unknown_field(&self, key: &str, fields: &[&str]) {
        let message = match suggest(key, fields) {
            Some(near) => format!("unknown field {key:?}; did you mean {near:?}?"),
            None => format!(
                "unknown field {key:?}; expected one of {}",
                fields.join(", ")
            ),
        };
        self.ctx
            .found
            .borrow_mut()
            .problems
            .push((field_key(&self.path, key), message));
    }
}

struct Seq<'d, 'a> {
    de: &'d De<'a>,
    items: &'a [Value],
    next: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(item) = self.items.get(self.next) else {
            return Ok(None);
        };
        let path = field_index(&self.de.path, self.next);
        self.next += 1;
        // An error the item's own `Deserialize` raised (e.g. an id newtype refusing its value)
        // is about the item, not the list: place it there.
        seed.deserialize(self.de.child(Some(item), path.clone()))
            .map(Some)
            .map_err(|e| e.locate(&path, false))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

/// Entries of a mapping or struct; a `None` value is a placeholder for a missing field.
struct Map<'d, 'a> {
    de: &'d De<'a>,
    entries: Vec<(&'a str, Option<&'a Value>)>,
    next: usize,
}

impl<'de> MapAccess<'de> for Map<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, _)) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((key, value)) = self.entries.get(self.next).copied() else {
            return Err(de::Error::custom("value requested before key"));
        };
        self.next += 1;
        let path = field_key(&self.de.path, key);
        // As for list items: place an error the value's own `Deserialize` raised at its field.
        seed.deserialize(self.de.child(value, path.clone()))
            .map_err(|e| e.locate(&path, value.is_none()))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}
