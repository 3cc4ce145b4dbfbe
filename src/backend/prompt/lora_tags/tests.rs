use super::*;

fn lora(name: &str, te: f64, unet: f64) -> LoraTag {
    LoraTag {
        name: name.to_string(),
        te_multiplier: te,
        unet_multiplier: unet,
        dyn_dim: None,
    }
}

#[test]
fn tags_are_cut_out_and_the_text_around_them_stays() {
    let extracted =
        extract_extra_networks("a cat, <lora:film grain:0.8>, (masterpiece)<lora:detail>").unwrap();
    assert_eq!(extracted.prompt, "a cat, , (masterpiece)");
    assert_eq!(
        extracted.loras,
        vec![lora("film grain", 0.8, 0.8), lora("detail", 1.0, 1.0)]
    );
    assert!(extracted.unsupported.is_empty());
}

#[test]
fn positional_multipliers_are_te_then_unet_then_dyn() {
    let extracted = extract_extra_networks("<lora:a:0.5:0.25:8>").unwrap();
    assert_eq!(
        extracted.loras,
        vec![LoraTag {
            dyn_dim: Some(8),
            ..lora("a", 0.5, 0.25)
        }]
    );
}

#[test]
fn named_multipliers_override_positional_ones() {
    let extracted =
        extract_extra_networks("<lora:a:te=0.5:unet=1> <lora:b:0.3:te=0.7> <lora:c:unet=2:dyn=4>")
            .unwrap();
    assert_eq!(extracted.prompt, "  ");
    assert_eq!(
        extracted.loras,
        vec![
            lora("a", 0.5, 1.0),
            // the unet multiplier defaults to the te one, named override included
            lora("b", 0.7, 0.7),
            LoraTag {
                dyn_dim: Some(4),
                ..lora("c", 1.0, 2.0)
            },
        ]
    );
}

#[test]
fn lyco_is_an_alias_of_lora_and_hypernets_are_reported() {
    let extracted =
        extract_extra_networks("x <lyco:old:0.6> <hypernet:anime:0.5> <foo:bar> y").unwrap();
    assert_eq!(extracted.prompt, "x    y");
    assert_eq!(extracted.loras, vec![lora("old", 0.6, 0.6)]);
    assert_eq!(
        extracted.unsupported,
        vec![
            UnsupportedTag {
                kind: "hypernet".into(),
                name: "anime".into()
            },
            UnsupportedTag {
                kind: "foo".into(),
                name: "bar".into()
            },
        ]
    );
}

#[test]
fn text_that_is_not_a_tag_stays() {
    let prompt = "a <b> c <:x> <lora:> d <lora x:1>";
    let extracted = extract_extra_networks(prompt).unwrap();
    assert_eq!(extracted.prompt, prompt);
    assert!(extracted.loras.is_empty());
}

#[test]
fn bad_numbers_are_errors_that_name_the_tag() {
    let err = extract_extra_networks("<lora:a:0.8x>").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<lora:a:0.8x>: te \"0.8x\" is not a finite number"
    );
    assert!(extract_extra_networks("<lora:a:1:nan>").is_err());
    assert!(extract_extra_networks("<lora:a:dyn=-1>").is_err());
    // Python's float() takes surrounding whitespace, so A1111 does.
    assert_eq!(
        extract_extra_networks("<lora:a: 0.5 >").unwrap().loras,
        vec![lora("a", 0.5, 0.5)]
    );
}
