//! Late-fee tiers: the fee of a return depends only on how many days late it is, charged once
//! per return (SEED.md: 3 copies returned 7 days late cost 500, not 1,500).

/// A tiers setting that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LIBRARY_LATE_FEE_TIERS: {0} (expected e.g. `7:500,14:1000,*:2000`)")]
pub struct FeeTiersError(String);

/// Ascending tiers `(up to this many days late, fee in won)`; the last may be open-ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeTiers {
    tiers: Vec<(Option<i64>, i64)>,
}

impl Default for FeeTiers {
    /// 1-7 days: 500 won, 8-14 days: 1,000 won, 15 days or more: 2,000 won.
    fn default() -> Self {
        Self {
            tiers: vec![(Some(7), 500), (Some(14), 1000), (None, 2000)],
        }
    }
}

impl std::str::FromStr for FeeTiers {
    type Err = FeeTiersError;

    /// Parses `days:fee` pairs separated by commas, days ascending, `*` for "any more days".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tiers = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (days, fee) = part
                .split_once(':')
                .ok_or_else(|| FeeTiersError(format!("`{part}` is not days:fee")))?;
            let fee: i64 = fee
                .trim()
                .parse()
                .ok()
                .filter(|f| *f >= 0)
                .ok_or_else(|| FeeTiersError(format!("fee `{fee}` is not a whole number of won")))?;
            let days = match days.trim() {
                "*" => None,
                d => Some(
                    d.parse::<i64>()
                        .ok()
                        .filter(|d| *d >= 1)
                        .ok_or_else(|| FeeTiersError(format!("days `{d}` is not a positive whole number")))?,
                ),
            };
            if let Some((previous, _)) = tiers.last() {
                match (previous, days) {
                    (None, _) => return Err(FeeTiersError("`*` must be the last tier".into())),
                    (Some(p), Some(d)) if d <= *p => {
                        return Err(FeeTiersError("days must ascend".into()));
                    }
                    _ => {}
                }
            }
            tiers.push((days, fee));
        }
        if tiers.is_empty() {
            return Err(FeeTiersError("no tier given".into()));
        }
        Ok(Self { tiers })
    }
}

impl FeeTiers {
    /// The fee for a return `days_late` days late: 0 when on time; past the last bounded tier
    /// without a `*`, the last tier's fee.
    pub fn late_fee_for(&self, days_late: i64) -> i64 {
        if days_late <= 0 {
            return 0;
        }
        self.tiers
            .iter()
            .find(|(upto, _)| upto.is_none_or(|u| days_late <= u))
            .or(self.tiers.last())
            .map(|(_, fee)| *fee)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_tiers_at_their_edges() {
        let tiers = FeeTiers::default();
        let fees: Vec<i64> = [0, 1, 7, 8, 14, 15, 100]
            .iter()
            .map(|d| tiers.late_fee_for(*d))
            .collect();
        assert_eq!(fees, vec![0, 500, 500, 1000, 1000, 2000, 2000]);
    }

    #[test]
    fn the_setting_parses_to_the_default() {
        assert_eq!("7:500,14:1000,*:2000".parse::<FeeTiers>(), Ok(FeeTiers::default()));
        assert_eq!(" 7:500 , 14:1000, *:2000 ".parse::<FeeTiers>(), Ok(FeeTiers::default()));
    }

    #[test]
    fn without_an_open_tier_the_last_fee_caps() {
        let tiers: FeeTiers = "3:100,10:300".parse().unwrap();
        assert_eq!(tiers.late_fee_for(3), 100);
        assert_eq!(tiers.late_fee_for(4), 300);
        assert_eq!(tiers.late_fee_for(50), 300);
    }

    #[test]
    fn bad_settings_are_refused_with_the_variable_named() {
        for bad in ["", "7", "7:x", "x:500", "0:500", "14:1000,7:500", "*:1,7:2", "7:-1"] {
            let err = bad.parse::<FeeTiers>().unwrap_err();
            assert!(err.to_string().contains("LIBRARY_LATE_FEE_TIERS"), "{bad}: {err}");
        }
    }
}
