package restapi

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// MaxTop is the largest $top a list accepts (IoT Central's documented
// maximum result size); a larger one, zero or a negative one is answered
// 400 BadRequest.
const MaxTop = 100

// maxFilterBytes bounds a $filter expression, and maxFilterDepth its
// nesting, so that a hostile expression cannot cost more than a small
// parse.
const (
	maxFilterBytes = 4096
	maxFilterDepth = 32
)

// odataKind is the type of a filterable field.
type odataKind int

const (
	odataString odataKind = iota
	odataBool
	odataNumber
)

// odataSchema is what one list operation accepts: its filterable fields
// with their types, its filter functions, and its orderable fields.
type odataSchema struct {
	fields    map[string]odataKind // lower-case name -> kind
	names     []string             // the documented spellings, for messages
	functions []string             // "contains", "indexof", "startswith"
	orderBy   []string             // orderable fields, documented spelling
}

// deviceOData is what IoT Central documents for GET /devices: $filter on
// id, displayName, enabled, provisioned, simulated, template and scopes
// (the organizations), with the functions indexof and contains, and
// $orderby on displayName.
var deviceOData = odataSchema{
	fields: map[string]odataKind{"id": odataString, "displayname": odataString, "enabled": odataBool,
		"provisioned": odataBool, "simulated": odataBool, "template": odataString, "scopes": odataString},
	names:     []string{"id", "displayName", "enabled", "provisioned", "simulated", "template", "scopes"},
	functions: []string{"contains", "indexof"},
	orderBy:   []string{"displayName"},
}

// templateOData is what IoT Central documents for GET /deviceTemplates:
// $filter on @id, displayName and capabilityModelId with the function
// contains, and $orderby on displayName.
var templateOData = odataSchema{
	fields:    map[string]odataKind{"@id": odataString, "displayname": odataString, "capabilitymodelid": odataString},
	names:     []string{"@id", "displayName", "capabilityModelId"},
	functions: []string{"contains"},
	orderBy:   []string{"displayName"},
}

// odataQuery is a parsed $filter, $orderby and $top of a list request.
type odataQuery struct {
	filter  filterNode // nil: every item
	orderBy string     // "" keeps the list's own order
	desc    bool
	top     int // 0: the handler's page size
}

// fieldGetter returns the value of a field (lower-case name) of one item:
// a string, a bool, a float64, a []string (scopes: matches when any
// element matches) or nil (absent).
type fieldGetter func(field string) any

// parseOData reads $filter, $orderby and $top for a list with schema s;
// s nil means the list supports none of them. Errors wrap ErrBadRequest
// (answered 400, as IoT Central answers a query it cannot use).
func parseOData(v url.Values, s *odataSchema) (odataQuery, error) {
	var q odataQuery
	for _, k := range []string{"$filter", "$orderby", "$top"} {
		vs, ok := v[k]
		if !ok {
			continue
		}
		if s == nil {
			return q, badRequestf("%s is not supported on this list", k)
		}
		if len(vs) > 1 {
			return q, badRequestf("query parameter %s given %d times", k, len(vs))
		}
	}
	if s == nil {
		return q, nil
	}
	if t, ok := v["$top"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(t[0]))
		if err != nil || n < 1 || n > MaxTop {
			return q, badRequestf("$top %q is not a number from 1 to %d", t[0], MaxTop)
		}
		q.top = n
	}
	if o, ok := v["$orderby"]; ok {
		parts := strings.Fields(o[0])
		if len(parts) == 0 || len(parts) > 2 {
			return q, badRequestf("$orderby %q: expected a field name, optionally followed by asc or desc", o[0])
		}
		i := slices.IndexFunc(s.orderBy, func(f string) bool { return strings.EqualFold(f, parts[0]) })
		if i < 0 {
			return q, badRequestf("$orderby: this list can be ordered by %s only, not %q", strings.Join(s.orderBy, ", "), parts[0])
		}
		q.orderBy = strings.ToLower(s.orderBy[i])
		if len(parts) == 2 {
			switch strings.ToLower(parts[1]) {
			case "asc":
			case "desc":
				q.desc = true
			default:
				return q, badRequestf("$orderby: direction %q is neither asc nor desc", parts[1])
			}
		}
	}
	if f, ok := v["$filter"]; ok {
		if len(f[0]) > maxFilterBytes {
			return q, badRequestf("$filter is longer than %d bytes", maxFilterBytes)
		}
		p := &filterParser{s: s, src: f[0]}
		if err := p.lex(); err != nil {
			return q, badRequestf("$filter: %w", err)
		}
		n, err := p.parseOr(0)
		if err == nil && p.pos < len(p.toks) {
			err = fmt.Errorf("unexpected %q at offset %d", p.toks[p.pos].text, p.toks[p.pos].at)
		}
		if err != nil {
			return q, badRequestf("$filter: %w", err)
		}
		if n.kind() != odataBool {
			return q, badRequestf("$filter: the expression is not a condition (true or false)")
		}
		q.filter = n
	}
	return q, nil
}

// apply filters and orders items; get returns an item's field values.
func applyOData[T any](q odataQuery, items []T, get func(T) fieldGetter) []T {
	if q.filter != nil {
		kept := items[:0:0]
		for _, it := range items {
			if v, _ := q.filter.eval(get(it)).(bool); v {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	if q.orderBy != "" {
		slices.SortStableFunc(items, func(a, b T) int {
			as, _ := get(a)(q.orderBy).(string)
			bs, _ := get(b)(q.orderBy).(string)
			c := cmp.Compare(strings.ToLower(as), strings.ToLower(bs))
			if q.desc {
				c = -c
			}
			return c
		})
	}
	return items
}

// Lexer.

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokLParen
	tokRParen
	tokComma
)

type token struct {
	kind tokKind
	text string // the identifier, the unquoted string, the number
	at   int
}

type filterParser struct {
	s    *odataSchema
	src  string
	toks []token
	pos  int
}

func (p *filterParser) lex() error {
	s := p.src
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			p.toks = append(p.toks, token{tokLParen, "(", i})
			i++
		case c == ')':
			p.toks = append(p.toks, token{tokRParen, ")", i})
			i++
		case c == ',':
			p.toks = append(p.toks, token{tokComma, ",", i})
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return fmt.Errorf("unterminated string starting at offset %d", i)
				}
				if s[j] == '\'' {
					if j+1 < len(s) && s[j+1] == '\'' { // '' is a quote
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			p.toks = append(p.toks, token{tokString, b.String(), i})
			i = j + 1
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
				j++
			}
			if _, err := strconv.ParseFloat(s[i:j], 64); err != nil {
				return fmt.Errorf("malformed number %q at offset %d", s[i:j], i)
			}
			p.toks = append(p.toks, token{tokNumber, s[i:j], i})
			i = j
		case c == '@' || c == '$' || c == '_' || unicode.IsLetter(rune(c)):
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] == '/' || s[j] >= '0' && s[j] <= '9' ||
				unicode.IsLetter(rune(s[j]))) {
				j++
			}
			p.toks = append(p.toks, token{tokIdent, s[i:j], i})
			i = j
		default:
			return fmt.Errorf("unexpected character %q at offset %d", c, i)
		}
	}
	return nil
}

func (p *filterParser) peek() (token, bool) {
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.pos], true
}

func (p *filterParser) isWord(w string) bool {
	t, ok := p.peek()
	return ok && t.kind == tokIdent && strings.EqualFold(t.text, w)
}

func (p *filterParser) expect(k tokKind, what string) (token, error) {
	t, ok := p.peek()
	if !ok {
		return t, fmt.Errorf("expected %s at the end", what)
	}
	if t.kind != k {
		return t, fmt.Errorf("expected %s at offset %d, found %q", what, t.at, t.text)
	}
	p.pos++
	return t, nil
}

// Grammar: or := and ("or" and)*; and := unary ("and" unary)*;
// unary := "not" unary | cmp; cmp := operand [op operand];
// operand := "(" or ")" | literal | field | function "(" field "," string ")".

func (p *filterParser) parseOr(depth int) (filterNode, error) {
	if depth > maxFilterDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxFilterDepth)
	}
	l, err := p.parseAnd(depth)
	for err == nil && p.isWord("or") {
		p.pos++
		var r filterNode
		if r, err = p.parseAnd(depth); err == nil {
			l, err = logical("or", l, r)
		}
	}
	return l, err
}

func (p *filterParser) parseAnd(depth int) (filterNode, error) {
	l, err := p.parseUnary(depth)
	for err == nil && p.isWord("and") {
		p.pos++
		var r filterNode
		if r, err = p.parseUnary(depth); err == nil {
			l, err = logical("and", l, r)
		}
	}
	return l, err
}

func (p *filterParser) parseUnary(depth int) (filterNode, error) {
	if p.isWord("not") {
		p.pos++
		if depth > maxFilterDepth {
			return nil, fmt.Errorf("nested deeper than %d", maxFilterDepth)
		}
		x, err := p.parseUnary(depth + 1)
		if err != nil {
			return nil, err
		}
		if x.kind() != odataBool {
			return nil, fmt.Errorf("not applies to a condition")
		}
		return notNode{x}, nil
	}
	return p.parseCompare(depth)
}

var compareOps = []string{"eq", "ne", "gt", "ge", "lt", "le"}

func (p *filterParser) parseCompare(depth int) (filterNode, error) {
	l, err := p.parseOperand(depth, true)
	if err != nil {
		return nil, err
	}
	t, ok := p.peek()
	if !ok || t.kind != tokIdent || !slices.Contains(compareOps, strings.ToLower(t.text)) {
		return l, nil
	}
	p.pos++
	r, err := p.parseOperand(depth, false)
	if err != nil {
		return nil, err
	}
	op := strings.ToLower(t.text)
	lk, rk := l.kind(), r.kind()
	_, lNull := l.(nullNode)
	_, rNull := r.(nullNode)
	switch {
	case lNull || rNull:
		if op != "eq" && op != "ne" {
			return nil, fmt.Errorf("null can only be compared with eq or ne")
		}
	case lk != rk:
		return nil, fmt.Errorf("%s compares values of different types at offset %d", op, t.at)
	case lk == odataBool && op != "eq" && op != "ne":
		return nil, fmt.Errorf("booleans can only be compared with eq or ne (offset %d)", t.at)
	}
	return compareNode{op: op, l: l, r: r}, nil
}

func (p *filterParser) parseOperand(depth int, left bool) (filterNode, error) {
	t, ok := p.peek()
	if !ok {
		return nil, fmt.Errorf("expected a value at the end")
	}
	switch t.kind {
	case tokLParen:
		p.pos++
		x, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tokRParen, "')'"); err != nil {
			return nil, err
		}
		return x, nil
	case tokString:
		p.pos++
		// IoT Central's documentation writes the template id field as
		// '@id'; on the left of a comparison that names the field.
		if k, ok := p.s.fields[strings.ToLower(t.text)]; ok && left && strings.HasPrefix(t.text, "@") {
			return fieldNode{name: strings.ToLower(t.text), k: k}, nil
		}
		return literalNode{v: t.text, k: odataString}, nil
	case tokNumber:
		p.pos++
		f, _ := strconv.ParseFloat(t.text, 64)
		return literalNode{v: f, k: odataNumber}, nil
	case tokIdent:
		p.pos++
		low := strings.ToLower(t.text)
		switch low {
		case "true", "false":
			return literalNode{v: low == "true", k: odataBool}, nil
		case "null":
			return nullNode{}, nil
		}
		if next, ok := p.peek(); ok && next.kind == tokLParen {
			return p.parseCall(t, low)
		}
		k, ok := p.s.fields[low]
		if !ok {
			return nil, fmt.Errorf("field %q cannot be filtered on; this list filters on %s", t.text, strings.Join(p.s.names, ", "))
		}
		return fieldNode{name: low, k: k}, nil
	}
	return nil, fmt.Errorf("unexpected %q at offset %d", t.text, t.at)
}

func (p *filterParser) parseCall(name token, fn string) (filterNode, error) {
	if !slices.Contains(p.s.functions, fn) {
		return nil, fmt.Errorf("function %q is not supported on this list; supported: %s", name.text, strings.Join(p.s.functions, ", "))
	}
	p.pos++ // (
	ft, err := p.expect(tokIdent, "a field name")
	if err != nil {
		return nil, err
	}
	k, ok := p.s.fields[strings.ToLower(ft.text)]
	if !ok || k != odataString {
		return nil, fmt.Errorf("%s needs a text field, not %q", fn, ft.text)
	}
	if _, err := p.expect(tokComma, "','"); err != nil {
		return nil, err
	}
	st, err := p.expect(tokString, "a quoted string")
	if err != nil {
		return nil, err
	}
	if _, err := p.expect(tokRParen, "')'"); err != nil {
		return nil, err
	}
	return callNode{fn: fn, field: strings.ToLower(ft.text), arg: st.text}, nil
}

func logical(op string, l, r filterNode) (filterNode, error) {
	if l.kind() != odataBool || r.kind() != odataBool {
		return nil, fmt.Errorf("%s joins conditions, not values", op)
	}
	return logicalNode{op: op, l: l, r: r}, nil
}

// Evaluation.

type filterNode interface {
	kind() odataKind
	eval(get fieldGetter) any
}

type literalNode struct {
	v any
	k odataKind
}

func (n literalNode) kind() odataKind      { return n.k }
func (n literalNode) eval(fieldGetter) any { return n.v }

type nullNode struct{}

func (nullNode) kind() odataKind      { return odataString }
func (nullNode) eval(fieldGetter) any { return nil }

type fieldNode struct {
	name string
	k    odataKind
}

func (n fieldNode) kind() odataKind          { return n.k }
func (n fieldNode) eval(get fieldGetter) any { return get(n.name) }

type notNode struct{ x filterNode }

func (notNode) kind() odataKind { return odataBool }
func (n notNode) eval(get fieldGetter) any {
	v, _ := n.x.eval(get).(bool)
	return !v
}

type logicalNode struct {
	op   string
	l, r filterNode
}

func (logicalNode) kind() odataKind { return odataBool }
func (n logicalNode) eval(get fieldGetter) any {
	l, _ := n.l.eval(get).(bool)
	if n.op == "and" && !l || n.op == "or" && l {
		return l
	}
	r, _ := n.r.eval(get).(bool)
	return r
}

type callNode struct {
	fn, field, arg string
}

func (n callNode) kind() odataKind {
	if n.fn == "indexof" {
		return odataNumber
	}
	return odataBool
}

func (n callNode) eval(get fieldGetter) any {
	one := func(s string) any {
		switch n.fn {
		case "contains":
			return strings.Contains(strings.ToLower(s), strings.ToLower(n.arg))
		case "startswith":
			return strings.HasPrefix(strings.ToLower(s), strings.ToLower(n.arg))
		default: // indexof
			return float64(strings.Index(s, n.arg))
		}
	}
	switch v := get(n.field).(type) {
	case string:
		return one(v)
	case []string:
		for _, s := range v {
			if r := one(s); r == true {
				return r
			}
		}
	}
	if n.fn == "indexof" {
		return float64(-1)
	}
	return false
}

type compareNode struct {
	op   string
	l, r filterNode
}

func (compareNode) kind() odataKind { return odataBool }

func (n compareNode) eval(get fieldGetter) any {
	l, r := n.l.eval(get), n.r.eval(get)
	if ls, ok := l.([]string); ok { // a multi-valued field matches when any value does
		if len(ls) == 0 {
			return n.test(nil, r)
		}
		for _, s := range ls {
			if n.test(s, r) {
				return true
			}
		}
		return false
	}
	if rs, ok := r.([]string); ok {
		for _, s := range rs {
			if n.test(l, s) {
				return true
			}
		}
		return len(rs) == 0 && n.test(l, nil)
	}
	return n.test(l, r)
}

func (n compareNode) test(l, r any) bool {
	if l == nil || r == nil || l == "" && r == nil || l == nil && r == "" {
		same := (l == nil || l == "") && (r == nil || r == "")
		switch n.op {
		case "eq":
			return same
		case "ne":
			return !same
		}
		return false
	}
	var c int
	switch lv := l.(type) {
	case string:
		rv, ok := r.(string)
		if !ok {
			return false
		}
		c = strings.Compare(lv, rv)
	case float64:
		rv, ok := r.(float64)
		if !ok {
			return false
		}
		c = cmp.Compare(lv, rv)
	case bool:
		rv, ok := r.(bool)
		if !ok {
			return false
		}
		if lv != rv {
			c = 1
		}
	default:
		return false
	}
	switch n.op {
	case "eq":
		return c == 0
	case "ne":
		return c != 0
	case "gt":
		return c > 0
	case "ge":
		return c >= 0
	case "lt":
		return c < 0
	default: // le
		return c <= 0
	}
}
