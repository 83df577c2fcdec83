//! What a `#[cached]` argument's JSON would lose: a check run before it becomes part of a key.
//!
//! JSON writes `None`, `()`, unit structs, NaN and both infinities all as `null`, so
//! `f(None)`, `f(Some(f64::NAN))` and `f(Some(f64::INFINITY))` would share one entry, and so
//! would `Some(None)` and `None` of an `Option<Option<T>>`. [`check`] refuses such arguments
//! (the call then runs without the cache); it walks the value only when its JSON holds a
//! `null`, the one place these collide.

use serde::ser::{self, Serialize};

/// Why an argument cannot be part of a key.
#[derive(Debug)]
pub(crate) struct Lossy(String);

impl std::fmt::Display for Lossy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Lossy {}

impl ser::Error for Lossy {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Lossy(message.to_string())
    }
}

/// `Ok` if the JSON of `value` tells it apart from every other value JSON can tell apart.
pub(crate) fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), Lossy> {
    value.serialize(Check).map(|_| ())
}

/// A serializer that writes nothing: it answers whether the value's JSON is `null`, and
/// fails where the JSON would lose information.
#[derive(Clone, Copy)]
struct Check;

fn non_finite(value: f64) -> Result<bool, Lossy> {
    if value.is_finite() {
        Ok(false)
    } else {
        Err(Lossy(format!(
            "{value} encodes as null in a key, like None: run uncached"
        )))
    }
}

/// Compound values: each part is checked; the whole is never `null`.
struct Parts;

macro_rules! parts {
    ($($trait:ident: $($method:ident($($arg:ident: $ty:ty),*)),+;)+) => {$(
        impl ser::$trait for Parts {
            type Ok = bool;
            type Error = Lossy;
            $(fn $method<T: Serialize + ?Sized>(&mut self, $($arg: $ty,)* value: &T) -> Result<(), Lossy> {
                $(let _ = $arg;)*
                value.serialize(Check).map(|_| ())
            })+
            fn end(self) -> Result<bool, Lossy> {
                Ok(false)
            }
        }
    )+};
}

parts! {
    SerializeSeq: serialize_element();
    SerializeTuple: serialize_element();
    SerializeTupleStruct: serialize_field();
    SerializeTupleVariant: serialize_field();
    SerializeMap: serialize_key(), serialize_value();
    SerializeStruct: serialize_field(key: &'static str);
    SerializeStructVariant: serialize_field(key: &'static str);
}

impl ser::Serializer for Check {
    type Ok = bool;
    type Error = Lossy;
    type SerializeSeq = Parts;
    type SerializeTuple = Parts;
    type SerializeTupleStruct = Parts;
    type SerializeTupleVariant = Parts;
    type SerializeMap = Parts;
    type SerializeStruct = Parts;
    type SerializeStructVariant = Parts;

    fn serialize_bool(self, _: bool) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_i8(self, _: i8) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_i16(self, _: i16) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_i32(self, _: i32) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_i64(self, _: i64) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_i128(self, _: i128) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_u8(self, _: u8) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_u16(self, _: u16) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_u32(self, _: u32) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_u64(self, _: u64) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_u128(self, _: u128) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_f32(self, value: f32) -> Result<bool, Lossy> {
        non_finite(f64::from(value))
    }
    fn serialize_f64(self, value: f64) -> Result<bool, Lossy> {
        non_finite(value)
    }
    fn serialize_char(self, _: char) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_str(self, _: &str) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_none(self) -> Result<bool, Lossy> {
        Ok(true)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<bool, Lossy> {
        if value.serialize(Check)? {
            return Err(Lossy(
                "Some of a value that encodes as null (Some(None), Some(())) reads as None in a key: run uncached"
                    .to_owned(),
            ));
        }
        Ok(false)
    }
    fn serialize_unit(self) -> Result<bool, Lossy> {
        Ok(true)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, Lossy> {
        Ok(true)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<bool, Lossy> {
        Ok(false)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Lossy> {
        value.serialize(Check)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<bool, Lossy> {
        value.serialize(Check).map(|_| false)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
    fn serialize_tuple(self, _: usize) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Parts, Lossy> {
        Ok(Parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn what_json_would_lose_is_refused() {
        assert!(check(&None::<f64>).is_ok());
        assert!(check(&Some(1.5)).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(check(&Some(bad)).is_err());
            assert!(check(&bad).is_err());
            assert!(check(&vec![1.0, bad]).is_err());
            assert!(check(&BTreeMap::from([("max", bad)])).is_err());
        }
        assert!(check(&f32::NAN).is_err());
        assert!(check(&Some(None::<u8>)).is_err());
        assert!(check(&Some(())).is_err());
        assert!(check(&None::<Option<u8>>).is_ok());
        assert!(check(&Some(Some(1u8))).is_ok());
        assert!(check(&Some(vec![None::<u8>])).is_ok());
        assert!(check(&("a", 1, [None::<u8>, Some(2)])).is_ok());
    }
}
