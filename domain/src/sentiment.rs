//! Sentiment with VADER, a lexicon analyzer tuned for social media: it
//! handles negation ("not good"), intensifiers ("very"), caps, punctuation
//! and emoji. The compound score runs from -1 to 1.

use std::sync::OnceLock;

pub fn compound(text: &str) -> f64 {
    static ANALYZER: OnceLock<vader_sentiment::SentimentIntensityAnalyzer<'static>> =
        OnceLock::new();
    let analyzer = ANALYZER.get_or_init(vader_sentiment::SentimentIntensityAnalyzer::new);
    analyzer
        .polarity_scores(text)
        .get("compound")
        .copied()
        .unwrap_or(0.0)
}

/// NEGATIVE below -0.05, POSITIVE above 0.05 (VADER's usual cut-offs).
pub fn label(compound: f64) -> &'static str {
    if compound <= -0.05 {
        "NEGATIVE"
    } else if compound >= 0.05 {
        "POSITIVE"
    } else {
        "NEUTRAL"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negation_and_intensifiers_are_understood() {
        let good = compound("The coffee was good.");
        let not_good = compound("The coffee was not good.");
        let very_good = compound("The coffee was very good!");
        assert!(good > 0.0 && not_good < 0.0, "{good} {not_good}");
        assert!(very_good > good);
        assert_eq!(
            label(compound("Worst service ever, totally disappointed")),
            "NEGATIVE"
        );
        assert_eq!(label(compound("Love it, thank you so much")), "POSITIVE");
    }
}
