//! The few numpy routines diffusers builds its schedules with, reproduced operation for operation
//! in f64. Timestep grids are rounded (half to even, like `np.round`) and truncated after these
//! run, so an off-by-one-ulp grid can move a timestep by a whole unit: exactness matters here.

/// `np.linspace(start, stop, num)` (`endpoint=True`): `i * step + start`, last element `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    values[num - 1] = stop;
    values
}

/// `np.linspace(start, stop, num, endpoint=False)`.
pub fn linspace_open(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let step = (stop - start) / num as f64;
    (0..num).map(|i| i as f64 * step + start).collect()
}

/// `np.arange(start, stop, step)` for float arguments. numpy stores `start` and `start + step`,
/// then fills element `i` as `start + i * ((start + step) - start)`; the re-derived step is not
/// always `step` itself, and that is what decides the `.round()` of trailing grids.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let length = ((stop - start) / step).ceil();
    if !length.is_finite() || length <= 0.0 {
        return Vec::new();
    }
    let length = length as usize;
    let second = start + step;
    let delta = second - start;
    (0..length)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.round` (half to even).
pub fn round(value: f64) -> f64 {
    value.round_ties_even()
}

/// `np.interp(x, [0, 1, ..., n-1], table)`: linear interpolation on the integer grid, clamped to
/// the end values, with numpy's special case of returning the table value on exact grid points.
pub fn interp_on_index_grid(x: f64, table: &[f64]) -> f64 {
    let Some(&last) = table.last() else {
        return f64::NAN;
    };
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return table[0];
    }
    let last_index = table.len() - 1;
    if x >= last_index as f64 {
        return last;
    }
    let j = x.floor() as usize;
    if j as f64 == x {
        return table[j];
    }
    let slope = (table[j + 1] - table[j]) / 1.0;
    let value = slope * (x - j as f64) + table[j];
    if value.is_nan() {
        slope * (x - (j + 1) as f64) + table[j + 1]
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_matches_numpy() {
        // Values printed by numpy 2.4: np.linspace(0, 999, 6), np.linspace(0, 1, 7).
        assert_eq!(linspace(0.0, 999.0, 6), vec![0.0, 199.8, 399.6, 599.400_000_000_000_1, 799.2, 999.0]);
        let sevenths = linspace(0.0, 1.0, 7);
        assert_eq!(sevenths[1], 0.166_666_666_666_666_66);
        assert_eq!(sevenths[5], 0.833_333_333_333_333_3);
        assert_eq!(linspace(3.0, 7.0, 1), vec![3.0]);
    }

    #[test]
    fn arange_keeps_numpys_length_and_fill() {
        // np.arange(1000, 0, -1000/6).round() = [1000, 833, 667, 500, 333, 167]
        let v: Vec<f64> = arange(1000.0, 0.0, -1000.0 / 6.0).into_iter().map(round).collect();
        assert_eq!(v, vec![1000.0, 833.0, 667.0, 500.0, 333.0, 167.0]);
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 7.0).len(), 7);
        assert_eq!(arange(1000.0, 0.0, -1000.0).len(), 1);
    }

    #[test]
    fn round_is_half_to_even() {
        assert_eq!(round(166.5), 166.0);
        assert_eq!(round(499.5), 500.0);
        assert_eq!(round(832.5), 832.0);
    }

    #[test]
    fn interp_clamps_and_hits_grid_points() {
        let table = [1.0, 3.0, 7.0];
        assert_eq!(interp_on_index_grid(-1.0, &table), 1.0);
        assert_eq!(interp_on_index_grid(1.0, &table), 3.0);
        assert_eq!(interp_on_index_grid(1.5, &table), 5.0);
        assert_eq!(interp_on_index_grid(9.0, &table), 7.0);
    }
}
