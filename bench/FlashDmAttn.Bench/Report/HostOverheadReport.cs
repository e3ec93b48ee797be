using System.Globalization;
using System.Text;

namespace FlashDmAttn.Bench.Report;

/// <summary>
/// The host-overhead report a person reads: the method and the targets, then the C ABI program's rows (launch floors
/// first) and the .NET side's, each call with its time above the launch floor.
/// </summary>
internal static class HostOverheadReport
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static string Render(HostOverheadResults results)
    {
        var md = new StringBuilder();
        md.AppendLine(Invariant, $"# FlashDmAttn host overhead per call: {results.Gpu}, {results.Date}");
        md.AppendLine();
        md.AppendLine(Invariant, $"GPU {results.Gpu}; date {results.Date}; commit {results.Commit ?? "unknown"}; shape {results.Shape}.");
        md.AppendLine();
        md.AppendLine(results.Method);
        md.AppendLine();
        md.AppendLine(Invariant, $"**above the launch floor** = µs per call - launches × µs of an empty kernel's launch " +
            $"(`{HostOverheadResults.KernelFloorId}`): what the call costs the CPU besides launching its kernels. A .NET row takes " +
            $"the launch count of the C ABI row of the same call.");
        md.AppendLine();
        md.AppendLine(Invariant, $"{HostOverheadResults.Targets}.");
        md.AppendLine();

        md.AppendLine("## C ABI (bench/host_overhead.cu)");
        md.AppendLine();
        if (results.CAbi is { } cAbi)
        {
            md.AppendLine(Invariant, $"From `{results.CAbiFile}`.{(cAbi.Method is { } method ? $" {method}" : "")}");
            md.AppendLine();
            if (cAbi.Gpu != results.Gpu || cAbi.Shape != results.Shape)
            {
                md.AppendLine(Invariant, $"**Measured elsewhere: {cAbi.Gpu}, shape {cAbi.Shape}.**");
                md.AppendLine();
            }

            AppendTable(md, cAbi.Rows);
        }
        else
        {
            md.AppendLine("Not in this run: `--host-overhead --c-abi FILE.json` adds the rows bench/host_overhead.cu writes.");
            md.AppendLine();
        }

        md.AppendLine("## .NET");
        md.AppendLine();
        AppendTable(md, results.Dotnet);
        return md.ToString();
    }

    private static void AppendTable(StringBuilder md, IEnumerable<HostOverheadRow> rows)
    {
        md.AppendLine("| call | µs per call (median) | min | max | launches | above the launch floor |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (HostOverheadRow row in rows)
        {
            string call = MarkdownReport.Cell(row.Skipped is { } reason ? $"{row.Label} (skipped: {reason})" : row.Label);
            md.Append(Invariant, $"| {call} | {Us(row.Us)} | {Us(row.MinUs)} | {Us(row.MaxUs)} | ");
            md.AppendLine(Invariant, $"{row.Launches?.ToString(Invariant) ?? "-"} | {Us(row.AboveFloorUs)} |");
        }

        md.AppendLine();
    }

    private static string Us(double? us) => MarkdownReport.Number(us, "F2");
}
