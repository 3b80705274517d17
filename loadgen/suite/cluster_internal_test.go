package suite

import "testing"

func TestParseStats(t *testing.T) {
	info := "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\nused_cpu_sys_children:9.0\r\n\r\n" +
		"# Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_eval:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha_ro:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_wait:calls=7,usec=1,usec_per_call=0.14,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_get:calls=100,usec=1,usec_per_call=0.01,rejected_calls=0,failed_calls=0\r\n"
	s := parseStats(info)
	if s.scripts != 15 || s.waits != 7 || s.cpu != 3.75 {
		t.Fatalf("parseStats: %+v, want 15 scripts, 7 waits, 3.75 CPU s", s)
	}
}
