//! Reading names as RFC 5280 writes them: a DirectoryString (§4.1.2.4) may be a
//! UTF8String, PrintableString, TeletexString, UniversalString or BMPString, and tools
//! write each (Windows tools BMPString, old CAs TeletexString). x509-parser reads only
//! the first two as text; this reads them all, and names the encoding when it cannot.

use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::x509::AttributeTypeAndValue;

/// The attribute's value as text; the reason, naming the encoding, when it is not text.
pub fn directory_string(attr: &AttributeTypeAndValue<'_>) -> Result<String, String> {
    let value = attr.attr_value();
    let data = value.data;
    let tag = value.tag();
    let utf8 = |name: &str| {
        String::from_utf8(data.to_vec()).map_err(|_| format!("a {name} that is not valid text"))
    };
    match tag {
        Tag::Utf8String => utf8("UTF8String"),
        Tag::PrintableString => utf8("PrintableString"),
        Tag::Ia5String => utf8("IA5String"),
        Tag::NumericString => utf8("NumericString"),
        Tag::VisibleString => utf8("VisibleString"),
        // T.61 in theory; in practice every CA that writes it means Latin-1.
        Tag::TeletexString => Ok(data.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return Err("a BMPString of an odd number of bytes".into());
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| "a BMPString that is not valid UTF-16".into())
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return Err("a UniversalString whose length is not a multiple of 4".into());
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or_else(|| "a UniversalString that is not valid UCS-4".into())
        }
        other => Err(format!(
            "encoded as ASN.1 tag {} (not a DirectoryString: UTF8String, PrintableString, \
             TeletexString, UniversalString or BMPString)",
            other.0
        )),
    }
}
