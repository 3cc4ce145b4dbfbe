//! `POST /sdapi/v1/png-info`: the infotext of an image (ours or A1111's), raw and parsed as
//! A1111's `parse_generation_parameters` parses it, plus the image's other PNG text chunks.

use std::io::Cursor;

use axum::body::Bytes;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::errors::{A1111Error, A1111ErrorBody, ValidationErrorBody};
use super::lax;
use super::request_model::parse_body;
use super::response::OrderedObject;
use crate::backend::image_io::{decode_base64, detect_format, read_infotext, ImageKind};
use crate::backend::infotext::parse_infotext;

#[derive(Debug, Deserialize, ToSchema)]
pub struct PngInfoRequest {
    /// Base64 PNG, JPEG or WebP (a `data:` URL is accepted).
    #[serde(default, deserialize_with = "lax::string")]
    pub image: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PngInfoResponse {
    /// The raw infotext (`""` when the image has none).
    pub info: String,
    /// The image's other text entries.
    #[schema(value_type = Object)]
    pub items: Map<String, Value>,
    /// The parsed infotext: `Prompt`, `Negative prompt`, `Steps`, `Size-1`, ... (strings), plus
    /// A1111's defaults for missing keys.
    #[schema(value_type = Object)]
    pub parameters: OrderedObject,
}

/// PNG text chunks other than `parameters` (A1111's `items`).
fn png_text_items(bytes: &[u8]) -> Map<String, Value> {
    let mut items = Map::new();
    let Ok(reader) = png::Decoder::new(Cursor::new(bytes)).read_info() else {
        return items;
    };
    let info = reader.info();
    let latin1 = info.uncompressed_latin1_text.iter().map(|c| (c.keyword.clone(), c.text.clone()));
    let compressed = info.compressed_latin1_text.iter().filter_map(|c| c.get_text().ok().map(|t| (c.keyword.clone(), t)));
    let utf8 = info.utf8_text.iter().filter_map(|c| c.get_text().ok().map(|t| (c.keyword.clone(), t)));
    for (keyword, text) in latin1.chain(compressed).chain(utf8) {
        if keyword != "parameters" {
            items.insert(keyword, Value::from(text));
        }
    }
    items
}

#[utoipa::path(post, path = "/sdapi/v1/png-info", tag = "a1111",
    request_body(content = PngInfoRequest),
    responses(
        (status = 200, description = "The image's infotext, raw and parsed", body = PngInfoResponse),
        (status = 400, description = "Not a readable PNG, JPEG or WebP", body = A1111ErrorBody),
        (status = 413, description = "The body is over the worker's --max-body-mib", body = A1111ErrorBody),
        (status = 422, description = "No `image` (FastAPI shape)", body = ValidationErrorBody),
    ),
    security((), ("basic" = []), ("bearer" = [])))]
pub async fn png_info(body: Bytes) -> Result<Json<PngInfoResponse>, A1111Error> {
    let request: PngInfoRequest = parse_body(&body)?;
    let Some(text) = request.image.filter(|t| !t.trim().is_empty()) else {
        return Err(A1111Error::validation(vec![Value::from("image")], "value_error.missing", "field required"));
    };
    let invalid = |e: &dyn std::fmt::Display| A1111Error::bad_request(format!("Invalid encoded image: {e}"));
    let bytes = decode_base64(&text).map_err(|e| invalid(&e))?;
    let kind = detect_format(&bytes).map_err(|e| invalid(&e))?;
    let info = read_infotext(&bytes).map_err(|e| invalid(&e))?.unwrap_or_default();
    let items = if kind == ImageKind::Png { png_text_items(&bytes) } else { Map::new() };
    let parameters = OrderedObject(parse_infotext(&info).a1111_parameters());
    Ok(Json(PngInfoResponse { info, items, parameters }))
}
