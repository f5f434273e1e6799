// The TOML editor: CodeMirror 6 with TOML highlighting, problems shown as
// diagnostics at their lines, light or dark with the system.
import {
  EditorState, Compartment, EditorView, keymap, lineNumbers, highlightActiveLine,
  highlightActiveLineGutter, drawSelection, highlightSpecialChars, history, defaultKeymap,
  historyKeymap, searchKeymap, highlightSelectionMatches, closeBrackets, closeBracketsKeymap,
  StreamLanguage, syntaxHighlighting, defaultHighlightStyle, HighlightStyle, bracketMatching,
  lintGutter, setDiagnostics, lintKeymap, toml, tags,
} from "codemirror";

const darkHighlight = HighlightStyle.define([
  { tag: tags.comment, color: "#8b949e", fontStyle: "italic" },
  { tag: [tags.string, tags.special(tags.string)], color: "#a5d6ff" },
  { tag: [tags.number, tags.bool, tags.atom], color: "#79c0ff" },
  { tag: [tags.propertyName, tags.variableName, tags.definition(tags.variableName)], color: "#ffa657" },
  { tag: [tags.heading, tags.bracket, tags.squareBracket], color: "#d2a8ff", fontWeight: "bold" },
  { tag: tags.invalid, color: "#ff7b72" },
]);

const darkTheme = EditorView.theme({
  "&": { color: "#e6edf3", backgroundColor: "#0d1117" },
  ".cm-content": { caretColor: "#e6edf3" },
  ".cm-cursor": { borderLeftColor: "#e6edf3" },
  ".cm-gutters": { backgroundColor: "#0d1117", color: "#8b949e", border: "none" },
  ".cm-activeLine, .cm-activeLineGutter": { backgroundColor: "#161b22" },
  "&.cm-focused .cm-selectionBackground, .cm-selectionBackground, ::selection": { backgroundColor: "#264f78" },
}, { dark: true });

const lightTheme = EditorView.theme({
  ".cm-gutters": { backgroundColor: "#f6f8fa", border: "none" },
});

const scheme = matchMedia("(prefers-color-scheme: dark)");
const themeFor = (dark) => dark
  ? [darkTheme, syntaxHighlighting(darkHighlight)]
  : [lightTheme, syntaxHighlighting(defaultHighlightStyle)];

// Returns {getText, setText, showProblems, focusLine, destroy}.
export function createEditor(parent, text, { onChange, label }) {
  const theme = new Compartment();
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: text,
      extensions: [
        lineNumbers(), highlightActiveLineGutter(), highlightSpecialChars(), history(),
        drawSelection(), bracketMatching(), closeBrackets(), highlightActiveLine(),
        highlightSelectionMatches(), lintGutter(), StreamLanguage.define(toml),
        // Tab moves focus out (keyboard users must be able to leave the editor).
        keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...searchKeymap, ...historyKeymap, ...lintKeymap]),
        theme.of(themeFor(scheme.matches)),
        EditorView.contentAttributes.of({ "aria-label": label }),
        EditorView.updateListener.of((update) => { if (update.docChanged) onChange?.(); }),
      ],
    }),
  });
  const follow = () => view.dispatch({ effects: theme.reconfigure(themeFor(scheme.matches)) });
  scheme.addEventListener("change", follow);

  return {
    view,
    getText: () => view.state.doc.toString(),
    setText(next) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: next } });
    },
    // problems: [{line, message}] with 1-based lines; line 0 marks the first.
    showProblems(problems) {
      const doc = view.state.doc;
      const diagnostics = problems.map((p) => {
        const line = doc.line(Math.min(Math.max(p.line || 1, 1), doc.lines));
        return { from: line.from, to: Math.max(line.from, line.to), severity: "error", message: p.message };
      });
      view.dispatch(setDiagnostics(view.state, diagnostics));
    },
    focusLine(number) {
      const line = view.state.doc.line(Math.min(Math.max(number, 1), view.state.doc.lines));
      view.dispatch({ selection: { anchor: line.from }, scrollIntoView: true });
      view.focus();
    },
    destroy() { scheme.removeEventListener("change", follow); view.destroy(); },
  };
}
