package api

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/flashstock/flashstock/engine"
)

// The checkout path's JSON, without reflection. Each function handles the plain form
// that clients send and the server writes (ASCII strings without escapes, integer
// quantities) and reports false for anything else, so the caller falls back to
// encoding/json: the fast path never decides a case differently, it only declines.
// FuzzFastItems and TestAppendOrderMatchesEncodingJSON hold them to that.

// parseItems reads {"items":[{"sku":"…","quantity":n},…]} into lines. ok is false when
// the body is anything but that plain form (other fields, escapes, non-integers,
// duplicate keys, trailing data…); present is false for {"items":null}.
func parseItems(b []byte) (lines []engine.Line, present, ok bool) {
	p := scanner{b: b}
	if !p.lit('{') || !p.key("items") {
		return nil, false, false
	}
	p.ws()
	if p.word("null") {
		return nil, false, p.lit('}') && p.end()
	}
	if !p.lit('[') {
		return nil, false, false
	}
	lines = make([]engine.Line, 0, 4)
	if p.lit(']') {
		return lines, true, p.lit('}') && p.end()
	}
	for {
		if !p.lit('{') || !p.key("sku") {
			return nil, false, false
		}
		sku, ok := p.str()
		if !ok || !p.lit(',') || !p.key("quantity") {
			return nil, false, false
		}
		q, ok := p.int()
		if !ok || !p.lit('}') {
			return nil, false, false
		}
		lines = append(lines, engine.Line{SKU: sku, Quantity: q})
		if p.lit(',') {
			continue
		}
		if !p.lit(']') {
			return nil, false, false
		}
		return lines, true, p.lit('}') && p.end()
	}
}

type scanner struct {
	b []byte
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// lit consumes c after optional whitespace.
func (p *scanner) lit(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *scanner) word(w string) bool {
	if len(p.b)-p.i >= len(w) && string(p.b[p.i:p.i+len(w)]) == w {
		p.i += len(w)
		return true
	}
	return false
}

// key consumes "name": exactly (JSON keys match case-insensitively in encoding/json,
// so any other spelling declines).
func (p *scanner) key(name string) bool {
	s, ok := p.str()
	return ok && s == name && p.lit(':')
}

// str consumes a string of printable ASCII without escapes.
func (p *scanner) str() (string, bool) {
	if !p.lit('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return "", false
		}
		p.i++
	}
	return "", false
}

// int consumes a non-negative integer without leading zeros that fits in int64.
func (p *scanner) int() (int64, bool) {
	p.ws()
	start := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	digits := p.b[start:p.i]
	if len(digits) == 0 || len(digits) > 18 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	return n, err == nil
}

func (p *scanner) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// plainString says whether encoding/json would write s as it is between quotes: no
// escapes, and none of the characters it escapes for HTML (<, >, &).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func appendString(b []byte, s string) []byte {
	if plainString(s) {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// appendOrder writes o exactly as json.Marshal would.
func appendOrder(b []byte, o *engine.Order) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, o.ID)
	b = append(b, `,"userId":`...)
	b = appendString(b, o.UserID)
	b = append(b, `,"items":`...)
	if o.Items == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, it := range o.Items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"sku":`...)
			b = appendString(b, it.SKU)
			b = append(b, `,"quantity":`...)
			b = strconv.AppendInt(b, it.Quantity, 10)
			b = append(b, `,"unitPrice":`...)
			b = strconv.AppendInt(b, it.UnitPrice, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"total":`...)
	b = strconv.AppendInt(b, o.Total, 10)
	b = append(b, `,"currency":`...)
	b = appendString(b, o.Currency)
	b = append(b, `,"status":`...)
	b = appendString(b, string(o.Status))
	b = append(b, `,"createdAt":`...)
	b = appendTime(b, o.CreatedAt)
	if o.HoldID != "" {
		b = append(b, `,"holdId":`...)
		b = appendString(b, o.HoldID)
	}
	return append(b, '}')
}

func appendTime(b []byte, t time.Time) []byte {
	if y := t.Year(); y < 0 || y > 9999 {
		q, _ := json.Marshal(t) // encoding/json's error case; never for real orders
		return append(b, q...)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendProblem writes p exactly as json.Marshal would.
func appendProblem(b []byte, p *Problem) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, p.Type)
	b = append(b, `,"title":`...)
	b = appendString(b, p.Title)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(p.Status), 10)
	if p.Detail != "" {
		b = append(b, `,"detail":`...)
		b = appendString(b, p.Detail)
	}
	b = append(b, `,"code":`...)
	b = appendString(b, p.Code)
	if len(p.Items) > 0 {
		b = append(b, `,"items":[`...)
		for i, s := range p.Items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"sku":`...)
			b = appendString(b, s.SKU)
			b = append(b, `,"requested":`...)
			b = strconv.AppendInt(b, s.Requested, 10)
			b = append(b, `,"available":`...)
			b = strconv.AppendInt(b, s.Available, 10)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if p.Field != "" {
		b = append(b, `,"field":`...)
		b = appendString(b, p.Field)
	}
	if p.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = appendString(b, p.RequestID)
	}
	return append(b, '}')
}
