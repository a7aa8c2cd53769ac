// Writes tests/data/om-floats.txt: one line per input, `"input" "stored"`,
// where "stored" is the `le`/`quantile` value Prometheus 3 keeps for it
// (strconv.ParseFloat, then labels.FormatOpenMetricsFloat; the input as
// written where ParseFloat fails). src/exposition/canonical.rs is tested
// against it. Regenerate: cd scripts/om-floats && go run . > ../../tests/data/om-floats.txt
package main

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"strconv"
)

// The same as prometheus/model/labels.FormatOpenMetricsFloat.
func om(f float64) string {
	switch {
	case f == 1:
		return "1.0"
	case f == 0:
		return "0.0"
	case f == -1:
		return "-1.0"
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, +1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	b := strconv.AppendFloat(nil, f, 'g', -1, 64)
	if !bytes.ContainsAny(b, "e.") {
		b = append(b, '.', '0')
	}
	return string(b)
}

func norm(v string) string {
	f, err := strconv.ParseFloat(v, 64)
	if err == nil {
		return om(f)
	}
	return v
}

func main() {
	cases := []string{"0", "-0", "+0", "1", "-1", "1.0", "1.00", "01", "0.5", ".5", "5.", "10", "100", "1000", "10000", "100000", "999999", "1000000", "1e6", "1E6", "1e+06", "2.5e6", "1234567", "0.0001", "0.00001", "1e-5", "0.000123", "1e21", "1e22", "123456789012345678901234", "+Inf", "+inf", "Inf", "inf", "-Inf", "infinity", "+Infinity", "-infinity", "NaN", "nan", "-NaN", "+NaN", "0x1p-2", "0X1.8P1", "0x10p0", "0x1", "0x1p", "1_000", "0x_1p0", "0x1_0p0", "abc", "", " 1", "1 ", "1e400", "-1e400", "1e-400", "4.9e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "0.1", "0.25", "0.005", "0.01", "0.025", "0.05", "2.5", "5", "30", "60", "0.99", "0.999", "0.9999", "3.14159265358979323846", "1.5e-7", "-2.5", "1e5", "1e-4", "9.999999999999999e-05", "99999.99999", "123456.7", "0x1p-1074", "0x1p-1075", "0x1.8p-1075", "0x1.fffffffffffff8p0", "0x1.fffffffffffff7p0", "0x1p1024", "0x1.fffffffffffffp1023", "0x.8p1", "0x8.p-3", "0xAp0", "1__0", "_1", "1_.5", "1._5", "0_1", "1e1_0", "1.5e-3_", "00.5", "-0.0", "+.5e1", "1.e2", "0x1p+2", "0x1P-02", "1ee2", "1e+", ".", "+", "Infinityx", "infin"}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 3000; i++ {
		var f float64
		switch i % 3 {
		case 0:
			f = math.Float64frombits(r.Uint64())
		case 1:
			f = float64(r.Intn(2000000)) / math.Pow(10, float64(r.Intn(12)))
		default:
			f = r.NormFloat64() * math.Pow(10, float64(r.Intn(40)-20))
		}
		if math.IsNaN(f) {
			continue
		}
		cases = append(cases, strconv.FormatFloat(f, 'g', -1, 64))
		cases = append(cases, strconv.FormatFloat(f, 'f', -1, 64))
		cases = append(cases, strconv.FormatFloat(f, 'e', 17, 64))
		if i%10 == 0 {
			cases = append(cases, strconv.FormatFloat(f, 'x', -1, 64))
			cases = append(cases, strconv.FormatFloat(f, 'x', 20, 64))
		}
	}
	for _, c := range cases {
		fmt.Printf("%q %q\n", c, norm(c))
	}
}
