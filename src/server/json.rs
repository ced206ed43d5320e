//! The JSON body extractor of our routes.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use super::error::ApiError;

/// `Json<T>` whose rejections are our JSON errors (400 bad JSON, 422 wrong shape,
/// 413 too large, 415 wrong content type). A number with no fraction (`16.0`) counts
/// as an integer, as JSON Schema says (so a client that writes every number as a
/// float is understood).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(mut v) = Json::<Value>::from_request(req, state)
            .await
            .map_err(|e: JsonRejection| ApiError::from(e))?;
        integral_numbers(&mut v);
        T::deserialize(v).map(ApiJson).map_err(|e| {
            ApiError::validation(format!(
                "Failed to deserialize the JSON body into the target type: {e}"
            ))
        })
    }
}

/// Rewrites every float without a fraction that fits an integer type as that integer.
fn integral_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            // 2^64 and -2^63 bound u64 and i64 exactly in f64.
            let int = if x.fract() != 0.0 {
                None
            } else if (0.0..18_446_744_073_709_551_616.0).contains(&x) {
                Some(Number::from(x as u64))
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&x) {
                Some(Number::from(x as i64))
            } else {
                None
            };
            if let Some(i) = int {
                *n = i;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_numbers),
        Value::Object(m) => m.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_become_integers() {
        let mut v: Value = serde_json::from_str(
            r#"{"n": 16.0, "t": 0.5, "s": [-3.0, 1e19, 2e19, 7], "x": "1.0"}"#,
        )
        .unwrap();
        integral_numbers(&mut v);
        assert_eq!(v["n"], serde_json::json!(16));
        assert!(v["n"].is_u64());
        assert_eq!(v["t"], serde_json::json!(0.5));
        assert!(v["s"][0].is_i64() && v["s"][0].as_i64() == Some(-3));
        assert_eq!(v["s"][1].as_u64(), Some(10_000_000_000_000_000_000));
        assert!(v["s"][2].is_f64(), "2e19 does not fit a u64");
        assert_eq!(v["x"], "1.0");
    }
}
