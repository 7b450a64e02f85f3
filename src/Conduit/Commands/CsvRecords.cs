using System.Text;

namespace Conduit.Commands;

/// <summary>
/// Reads RFC 4180 CSV one record at a time (quoted fields with "" escapes and line breaks,
/// CRLF or LF), never the whole file at once. Each record comes with the line it starts on.
/// </summary>
internal static class CsvRecords
{
    public static async IAsyncEnumerable<(int Line, string[] Fields)> ReadAsync(TextReader reader)
    {
        var line = 0;
        while (await reader.ReadLineAsync().ConfigureAwait(false) is { } text)
        {
            line++;
            var start = line;
            var fields = new List<string>();
            var field = new StringBuilder();
            var quoted = false;
            var i = 0;
            while (true)
            {
                if (i == text.Length)
                {
                    if (!quoted) break;
                    // A quoted field goes on over a line break.
                    text = await reader.ReadLineAsync().ConfigureAwait(false) ?? throw new FormatException($"line {start}: a quoted field is never closed");
                    line++;
                    field.Append('\n');
                    i = 0;
                    continue;
                }
                var c = text[i++];
                if (quoted)
                {
                    if (c != '"') field.Append(c);
                    else if (i < text.Length && text[i] == '"') { field.Append('"'); i++; }
                    else quoted = false;
                }
                else if (c == ',')
                {
                    fields.Add(field.ToString());
                    field.Clear();
                }
                else if (c == '"' && field.Length == 0) quoted = true;
                else field.Append(c);
            }
            fields.Add(field.ToString());
            if (fields.Count == 1 && fields[0].Length == 0) continue; // blank line
            yield return (start, fields.ToArray());
        }
    }
}
